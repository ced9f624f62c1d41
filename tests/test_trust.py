"""Numbers you can trust: contention, drift, sample counts, settings that cannot leak, big machines.

Nothing here asserts a speed. The burner test asserts that a disturbed figure is either close
to the quiet one or flagged, and that the watch saw the burner.
"""
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from suite.cli import main
from suite.timing import time_model
from suite.timing.contention import Load, is_contended
from suite.timing.figure import FLAGS, figure_flags, measure_figure
from suite.timing.options import TimingOptions, sampling_rules
from suite.timing.settings import current_settings, preserved_settings
from suite.timing.stats import median_interval

QUICK_LENET = {"mode": "train", "quick": True, "batch_size": 8, "min_run_time": 0.05}  # a record's shape, not its speed


# -- the rules, on synthetic inputs --------------------------------------------------------------

@pytest.mark.parametrize(("n", "ranks"), [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)), (50, (18, 33))])
def test_median_interval_uses_the_binomial_order_statistics(n, ranks):
    # The ranks of the classic distribution-free 95% interval of a median (any statistics table).
    assert median_interval(list(range(1, n + 1))) == ranks


def test_no_median_interval_from_five_samples_or_fewer():
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None


def load(others, throttled=None):
    return Load(wall_s=1.0, others_cores=others, steal_cores=0.0, own_cores=1.0, throttled_s=throttled)


def test_contention_is_others_beyond_the_spare_cores():
    assert is_contended(load(1.0), cores_needed=2, cores=2) is True  # a burner on a 2-core box
    assert is_contended(load(0.05), cores_needed=2, cores=2) is False  # daemons
    assert is_contended(load(1.0), cores_needed=1, cores=2) is False  # a 1-thread figure leaves a core
    assert is_contended(load(1.1), cores_needed=2, peers_cores=1, cores=2) is False  # the other DDP rank
    assert is_contended(load(0.0, throttled=0.5), cores_needed=1, cores=64) is True  # a CPU quota bit
    assert is_contended(load(None), cores_needed=2, cores=2) is None  # nothing readable: no verdict


# -- the core, for real -----------------------------------------------------------------------

def sleeping_step():
    time.sleep(0.02)


@pytest.mark.parametrize("contended, attempts", [([True, False], 2), ([True, True], 2), ([False], 1)])
def test_a_contended_attempt_is_measured_again_after_waiting_for_quiet(monkeypatch, contended, attempts):
    from suite.timing import figure

    seen, waits = iter(contended), []
    monkeypatch.setattr(figure, "is_contended", lambda *args, **kwargs: next(seen))
    monkeypatch.setattr(figure, "drifted", lambda *args: False)  # whatever this machine's canary did
    monkeypatch.setattr(figure, "wait_for_quiet", lambda cores, budget_s, *rest: waits.append(budget_s))
    options = TimingOptions(mode="eval", device="cpu", setup="cpu", world_size=1, batch_size=1, threads=1,
                            dtype="float32", channels_last=False,
                            **{**sampling_rules(quick=True, min_run_time=0.01), "warmup_steps": 0, "warmup_s": 0.0,
                               "attempts": 2, "quiet_budget_s": 0.5})
    _, trust = measure_figure(sleeping_step, options=options, devices=[torch.device("cpu")])
    assert trust.attempts == attempts and waits == [0.5] * (attempts - 1)
    assert trust.contended is contended[-1]  # the last attempt's: flagged only when it too was contended


def test_each_flag_comes_from_its_own_evidence():
    # A figure of a 20 ms step, full-run rules on one thread, one attempt and no settling.
    full = TimingOptions(mode="eval", device="cpu", setup="cpu", world_size=1, batch_size=1, threads=1,
                         dtype="float32", channels_last=False, **sampling_rules(quick=False))
    asked = replace(full, min_run_time=0.01, warmup_steps=0, warmup_s=0.0, attempts=1)
    cpu = [torch.device("cpu")]
    # Room for the minimum count (no precision target): the real loop gives it, and no few_samples.
    roomy = replace(asked, min_samples=3, target_precision=None)
    sampling, trust = measure_figure(sleeping_step, options=roomy, devices=cpu)
    assert len(sampling.samples) == roomy.min_samples
    quiet = replace(trust, contended=False, drift=False, throttled=False)  # whatever this machine did
    # time_model's record is one process's: the flag says its interval cannot speak for a rerun
    assert figure_flags(noisy=False, sampling=sampling, trust=quiet, options=roomy) == ["one_process"]
    # A time cap too short for 10 such steps: the loop stops early, and the figure says so.
    capped = replace(asked, time_cap_s=0.02)
    few, trust = measure_figure(sleeping_step, options=capped, devices=cpu)
    assert few.stop_reason == "time_cap" and len(few.samples) < capped.min_samples
    assert figure_flags(noisy=False, sampling=few, trust=quiet, options=capped) == ["few_samples", "one_process"]
    disturbed = replace(trust, contended=True, drift=True, throttled=True)
    every = figure_flags(noisy=True, sampling=few, trust=disturbed, options=replace(capped, quick=True),
                         peak_fraction=1.02)
    assert every == list(FLAGS)
    # a figure at most at the calibrated peak is no finding; beyond it, the peak was never the limit
    assert "above_peak" not in figure_flags(noisy=False, sampling=sampling, trust=quiet, options=roomy, peak_fraction=1.0)


def test_every_quick_record_has_five_samples_a_flags_list_and_its_settings():
    record = time_model("cifar10_lenet", **QUICK_LENET)
    assert len(record["samples"]) >= 5 and isinstance(record["flags"], list) and "quick" in record["flags"]
    assert record["settings"] == {**current_settings(), "threads": record["threads"]}
    assert record["canary_before_s"] > 0 and record["canary_after_s"] > 0
    assert record["load"]["others_cores"] is not None  # Linux: /proc/stat was read


@pytest.fixture
def burner():
    """One process spinning on one core, stopped (and reaped) at the end of the test."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.slow  # 28 s on 2 cores; the flag rules themselves are tested on recorded data above
@pytest.mark.skipif(len(os.sched_getaffinity(0)) > 2, reason="one burner only contends on a 1- or 2-core machine")
def test_a_quick_run_under_a_burner_has_every_figure_close_to_the_quiet_one_or_flagged(request, tmp_path):
    import io

    from dataclasses import replace

    from suite import results
    from suite.runner import default_timing_api, run_suite

    def figures(name):
        # one process a figure: the flags are each process's own; more processes only cost time here
        path = run_suite(device_request="cpu", model_names=["cifar10_lenet"], quick=True, out_dir=tmp_path / name,
                         report_dir=tmp_path / f"{name}-report", verdict_sources=[], stream=io.StringIO(),
                         timing=replace(default_timing_api(), processes=lambda quick: 1, measure_limit=None))
        return {(r["mode"], r["setup"]): r for r in results.load(path)["records"] if r["kind"] == "timing"}

    quiet = figures("quiet")
    burner_proc = request.getfixturevalue("burner")
    loaded = figures("burner")
    burner_proc.kill()
    assert quiet.keys() == loaded.keys() == {("train", "cpu"), ("eval", "cpu")}
    for key, figure in loaded.items():
        ratio = figure["median_s"] / quiet[key]["median_s"]
        print(f"{key}: quiet {quiet[key]['median_s'] * 1e3:.1f} ms {quiet[key]['flags']}, under a burner "
              f"{figure['median_s'] * 1e3:.1f} ms ({ratio:.2f}x) {figure['flags']}, attempts {figure['attempts']}")
        assert figure["load"]["others_cores"] > 0.5, key  # the watch saw the burner
        assert abs(ratio - 1) <= 0.25 or {"contended", "drift"} & set(figure["flags"]), (key, ratio, figure["flags"])
        if "contended" in figure["flags"]:  # measured again, after waiting for quiet, before it was flagged
            assert figure["attempts"] == 2, key


def test_the_results_file_loads_from_the_moment_it_exists(tmp_path):
    from suite import results

    store = results.ResultsStore(tmp_path, {"name": "box"})
    data = results.load(store.path)
    assert (data["status"], data["records"]) == ("running", [])


# -- settings cannot leak ------------------------------------------------------------------------

def test_a_conformance_step_cannot_change_what_the_next_timing_sees():
    from suite.conformance.sources import VerdictSource
    from suite.runner import _conformance_step

    def meddling_check(device, quick):
        torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        yield {"suite": "test", "case": "meddling", "check": "none", "passed": True}

    before = current_settings()
    assert [r["case"] for r in _conformance_step(VerdictSource(meddling_check), "cpu", True).produce()] == ["meddling"]
    assert current_settings() == before
    with preserved_settings():
        torch.use_deterministic_algorithms(True)
    assert current_settings() == before


@pytest.mark.distributed
def test_a_check_on_the_pool_then_a_ddp_timing_sees_the_defaults():
    from suite.distributed import get_pool, selfcheck

    pool = get_pool(2)
    defaults = pool.run(selfcheck.settings_now)
    changed = pool.run(selfcheck.switch_settings_off)
    assert changed != defaults  # the call did change them, inside the call
    assert pool.run(selfcheck.settings_now) == defaults
    record = time_model("speech_cnn", setup="cpu-ddp", world_size=2, threads=1, batch_size=8, quick=True)
    assert record["settings"] == {**defaults[0], "threads": 1}


@pytest.mark.distributed
def test_the_fork_server_never_initialises_cuda_before_it_forks():
    from suite.distributed import get_pool, selfcheck

    states = get_pool(2).run(selfcheck.cuda_state)
    assert states == [{"initialized": False, "bad_fork": False}] * 2


# -- big machines and the plan -------------------------------------------------------------------

def simulate_big_machine(monkeypatch, cores=128, gpus=8):
    import suite.devices
    import suite.timing.options
    import suite.timing.plan

    monkeypatch.setattr(suite.timing.plan, "usable_cores", lambda: cores)
    monkeypatch.setattr(suite.timing.options, "usable_cores", lambda: cores)
    monkeypatch.setattr(suite.devices, "cuda_count", lambda: gpus)


def test_a_128_core_8_gpu_plan_has_a_bounded_size_and_never_more_processes_than_cores(monkeypatch, capsys):
    from suite.cases.models import CASES as MODELS, article_models, models_for
    from suite.conformance.sources import VERDICT_SOURCES
    from suite.runner import TimingApi, make_plan
    from suite.timing import worker
    from suite.timing.plan import iter_setups
    from suite.timing.processes import round_order

    simulate_big_machine(monkeypatch)
    api = TimingApi(None, lambda device, quick: {"flops_per_s": 1.0}, iter_setups)
    _, _, steps = make_plan(device_request="all", verdict_sources=[], timing=api)
    powers = 8  # 1, 2, 4, ..., 128 threads; world sizes 2 .. 128
    # The article's models on the CPU: train and eval at each thread count and compiled (at all
    # cores); DDP trains.
    cpu = len(article_models()) * (2 * powers + (powers - 1) + 2)
    # On the GPUs the standard workloads too: fp32, bf16, channels_last, compiled, DataParallel in
    # two modes, DDP trains; channels_last for image models only, and serving for the served ones.
    per_model = {name: 2 + 2 + 2 * MODELS.get(name).image_input + 2 + 2 + 1 + MODELS.get(name).serving
                 for name in models_for("cuda")}
    cuda = sum(per_model.values())
    # four fresh processes a figure, then one step that gives every figure its final interval
    assert len(steps) == 2 + 4 * (cpu + cuda) + 1 == 2 + 4 * (75 + 107) + 1
    assert len(make_plan(device_request="all", timing=api)[2]) == len(steps) + 2 * len(VERDICT_SOURCES)

    # One round in a worker process (suite.timing.worker) with a stand-in time_model: a DDP timing
    # keeps its pool alive until the worker closes it, which it does when the next figure needs another.
    alive: dict = {}
    most = [0]

    def fake_time_model(model, mode, **kwargs):
        if kwargs["setup"].endswith("-ddp"):
            alive[(kwargs["setup"], kwargs.get("world_size"))] = kwargs.get("world_size") or 8
        most[0] = max(most[0], sum(alive.values()))
        return {"model": model}

    requests = [{"figure": c.id, "model": c.model, "mode": c.mode, "kwargs": c.kwargs}
                for c in iter_setups(["cpu", "cuda"]) if not c.skip_reason]
    monkeypatch.setattr("suite.timing.core.time_model", fake_time_model)
    monkeypatch.setattr("suite.distributed.pool.close_shared_pools", alive.clear)
    for round_index in (0, 1):  # in the plan's order and reversed
        monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"requests": round_order(requests, round_index)})))
        assert worker.main() == 0
        answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [a["index"] for a in answers] == list(range(cpu + cuda)) and not [a for a in answers if "error" in a]
    assert most[0] == 128  # the largest world size alone, never two parts of the run at once


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "--json", "--device", "cpu"]) == 0
    plan = json.loads(capsys.readouterr().out)
    labels = [s["label"] for s in plan["steps"]]
    assert labels[0] == "peak FLOP/s on cpu" and any(label.startswith("timing ") for label in labels)
    # the steps' sum, less what the conformance sources save running two at a time (runner.plan_estimate_s)
    assert 0 < plan["estimate_s"] <= sum(s["estimate_s"] for s in plan["steps"]) + 1e-9
    assert list(tmp_path.iterdir()) == []
