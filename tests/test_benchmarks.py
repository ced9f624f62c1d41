"""pytest-benchmark tests, generated from the model registry and the setup variants.

Each test times one (model, setup, mode) through suite.time_model and hands the core's raw
samples to pytest-benchmark (suite.timing.benchmark_bridge), so nothing is timed twice.
Without a benchmark option (--benchmark-only, --benchmark-json, --benchmark-enable, ...) a
plain `pytest` run is a smoke test of the timing path: quick settings (SMOKE_OPTIONS: a batch
of 8, one thread), one model on the CPU (SMOKE_MODEL), a few seconds in all. Any
benchmark option gives real figures of every model, at the registry's batch sizes.
"""
import json
import statistics

import pytest
import torch

from suite.cases.models import CASES as MODELS, models_for
from suite.timing.benchmark_bridge import benchmark_time_model, benchmarks_requested
from suite.timing.plan import VARIANTS, modes_for, variant_applies
from suite.timing.setups import COMPILE_SETUPS


# A smoke run times every CPU setup and mode of one model, the article's smallest; the others' go
# through the same path under `-m slow` (mnist_cnn's train figure took 4 to 8 s beside the other
# tests here, cifar10_lenet's about 1 s). Any benchmark option times every model.
SMOKE_MODEL = "cifar10_lenet"
# A smoke figure is timed at one thread and takes what the quick rules' minimum gives, without
# seeking a precision: the launched commands and pools of a test run (tests/conftest.py) keep the
# other core busy, and a parallel region on two threads then stalls at each barrier.
# cifar10_lenet's eval figure took 11 s that way, against 17 ms a step alone (a 72 ms step).
SMOKE_OPTIONS = {"batch_size": 8, "threads": 1, "seek_precision": False}


def _marks(variant, model, smoke):
    marks = [pytest.mark.distributed] if variant.distributed else []
    if variant.kwargs["setup"] in COMPILE_SETUPS:
        # Inductor here: the process's first compile 10 to 17 s, each later cold one 2.3 to 12 s a
        # model (docs/compile.md), so `-m slow`. The default run times the compile setup's path
        # with aot_eager (tests/test_compile.py).
        marks.append(pytest.mark.slow)
    elif smoke and variant.device == "cpu" and model != SMOKE_MODEL:
        marks.append(pytest.mark.slow)
    if variant.device == "cuda":
        marks.append(pytest.mark.multigpu if variant.devices_needed > 1 else pytest.mark.gpu)
    return marks


def pytest_generate_tests(metafunc):
    if metafunc.function is test_time_model:
        smoke = not benchmarks_requested(metafunc.config)
        metafunc.parametrize(("model", "variant", "mode"), [
            pytest.param(model, variant, mode, id=f"{model}-{variant.id}-{mode}", marks=_marks(variant, model, smoke))
            for variant in VARIANTS for model in models_for(variant.device)
            if variant_applies(variant, MODELS.get(model)) for mode in modes_for(variant, MODELS.get(model))])


def test_time_model(benchmark, request, model, variant, mode):
    benchmark.group = f"{variant.id}-{mode}"
    quick = not benchmarks_requested(request.config)
    kwargs = {**variant.kwargs, **SMOKE_OPTIONS} if quick else variant.kwargs
    record = benchmark_time_model(benchmark, model, mode=mode, quick=quick, **kwargs)
    assert record["model"] == model and record["samples"]
    expected_batch = SMOKE_OPTIONS["batch_size"] if quick else MODELS.get(model).batch_size(variant.device)
    assert record["batch_size"] == expected_batch
    if variant.kwargs["setup"] in COMPILE_SETUPS:  # compiled before timing, both compiles recorded
        assert record["compile_backend"] == "inductor"
        assert record["compile_cold_s"] > 0 and record["compile_warm_s"] > 0


pytest_plugins = ["pytester"]


def test_benchmark_statistics_are_the_core_samples_and_machine_info_names_torch(pytester):
    pytester.makepyfile(
        """
        import json

        from suite.timing.benchmark_bridge import benchmark_time_model

        def test_one(benchmark):
            record = benchmark_time_model(benchmark, "speech_cnn", mode="eval", quick=True,
                                          min_run_time=0.05)
            with open("record.json", "w") as out:
                json.dump(record, out)
        """
    )
    # in this process: torch is imported already (a subprocess spends seconds importing it again)
    result = pytester.runpytest_inprocess("--benchmark-json", "out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    saved = json.loads((pytester.path / "out.json").read_text())
    record = json.loads((pytester.path / "record.json").read_text())
    assert saved["machine_info"]["torch"]["version"] == torch.__version__
    (bench,) = saved["benchmarks"]
    assert bench["extra_info"]["mode"] == "eval" and bench["extra_info"]["flops"] > 0
    # pytest-benchmark's own figures, as it saved them, are those of the core's samples (quick
    # runs keep at least 5), not of the one round that benchmark.pedantic timed
    samples = record["samples"]
    assert bench["stats"]["rounds"] == len(samples) >= 5
    assert bench["stats"]["median"] == pytest.approx(statistics.median(samples)) == record["median_s"]
    assert (bench["stats"]["min"], bench["stats"]["max"]) == (min(samples), max(samples))
    assert bench["stats"]["iterations"] == record["steps_per_sample"]
