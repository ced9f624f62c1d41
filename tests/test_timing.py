"""The timing core's own behaviour. Nothing here asserts a speed: speeds belong in benchmarks."""
import itertools
import json
import logging
import os
import statistics
import time
import timeit

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.models import models_for
from suite.cases.models import ModelSpec
from suite.devices import cuda_count
from suite.errors import DeviceUnavailableError, SuiteError
from suite.timing import attach_scaling_efficiency, iter_setups, sweep_batch_sizes, time_model
from suite.timing import peak
from suite.timing.measure import PROBE_STEPS, block_size, measure, timed_block
from suite.timing.stats import NOISY_IQR_FRACTION, is_noisy, median_interval, summarize

FAST = {"quick": True, "min_run_time": 0.05}
N, IN, OUT = 8, 32, 16


def linear_spec(factory=lambda: nn.Linear(IN, OUT), name="linear_probe") -> ModelSpec:
    return ModelSpec(
        name=name, title="one Linear layer", dataset="synthetic", factory=factory,
        input_shape=(IN,), num_classes=OUT, loss_fn=F.cross_entropy, optimizer=torch.optim.SGD,
        optimizer_kwargs={"lr": 0.1}, batch_sizes={"cpu": N}, source="tests",
    )


class ThreadRecorder(nn.Linear):
    """A Linear layer that notes torch's thread count each time it runs."""

    seen: list[int] = []

    def __init__(self):
        super().__init__(IN, OUT)

    def forward(self, x):
        ThreadRecorder.seen.append(torch.get_num_threads())
        return super().forward(x)


RECORD_TYPES = {
    "kind": str, "model": str, "mode": str, "device": str, "setup": str, "world_size": int,
    "batch_size": int, "global_batch_size": int, "threads": int, "dtype": str,
    "channels_last": bool, "median_s": float, "iqr_s": float, "iqr_fraction": float,
    "noisy": bool, "samples": list, "steps_per_sample": int, "warmup_steps": int, "method": str,
    "min_run_time": float, "throughput": float, "peak_mem_bytes": int, "peak_mem_kind": str,
    "flops": int, "achieved_flops_per_s": float, "peak_flops_per_s": float,
    "peak_fraction": float, "peak_calibration": dict, "quick": bool, "torch": str,
    "flags": list, "stop_reason": str, "min_samples": int, "time_cap_s": float, "attempts": int,
    "canary_before_s": float, "canary_after_s": float, "load": dict, "settings": dict,
    "sample_others_cores": list,
}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_record_has_every_field_with_sane_types(mode):
    record = time_model("cifar10_lenet", mode=mode, batch_size=4, **FAST)
    for field, kind in RECORD_TYPES.items():
        assert isinstance(record[field], kind), (field, record[field])
    assert "scaling_efficiency" in record and "device_s" not in record
    assert (record["kind"], record["model"], record["mode"]) == ("timing", "cifar10_lenet", mode)
    assert (record["device"], record["setup"], record["world_size"]) == ("cpu", "cpu", 1)
    assert record["torch"] == torch.__version__
    assert record["median_s"] > 0 and record["iqr_s"] >= 0 and record["peak_mem_bytes"] > 0
    assert record["throughput"] == pytest.approx(4 / record["median_s"])
    assert record["achieved_flops_per_s"] == pytest.approx(record["flops"] / record["median_s"])
    json.loads(json.dumps(record, allow_nan=False))


def test_raw_samples_are_kept_and_summarised():
    record = time_model(linear_spec(), mode="eval", **FAST)
    samples = record["samples"]
    assert len(samples) >= record["min_samples"] == 5 and all(isinstance(s, float) and s > 0 for s in samples)
    assert record["median_s"] == pytest.approx(statistics.median(samples))
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    assert record["iqr_s"] == pytest.approx(q3 - q1)


@pytest.mark.parametrize(("samples", "noisy"), [
    ([1.0] * 10, False),
    ([1.0, 1.0, 1.01, 1.02, 0.99, 1.0], False),
    ([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], True),  # IQR 1.0 on a median of 1.5
    ([1.0, 1.3, 0.7, 1.0, 1.2, 0.8], True),
    ([0.5], False),  # one sample: no spread to measure
])
def test_noisy_flag_is_iqr_over_ten_percent_of_median(samples, noisy):
    summary = summarize(samples)
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else (samples[0],) * 3
    assert summary["median_s"] == pytest.approx(statistics.median(samples))
    assert summary["iqr_s"] == pytest.approx(q3 - q1)
    assert summary["noisy"] is noisy
    assert summary["noisy"] is (summary["iqr_s"] / summary["median_s"] >= NOISY_IQR_FRACTION)
    assert summary["noisy"] is is_noisy(summary["iqr_s"], summary["median_s"])  # the report's rule


def test_noisy_threshold_is_measurements_own():
    # quartiles 1.1875 and 1.3125 around a median of 1.25 (exact in binary): an IQR of exactly
    # 10% is where torch.utils.benchmark.Measurement starts to warn
    from torch.utils.benchmark import Measurement, TaskSpec

    for samples in ([1.125, 1.1875, 1.25, 1.3125, 1.375], [1.125, 1.19, 1.25, 1.31, 1.375]):
        warned = bool(Measurement(1, samples, TaskSpec("", "")).has_warnings)
        assert summarize(samples)["noisy"] is warned
    assert summarize([1.125, 1.1875, 1.25, 1.3125, 1.375])["noisy"] is True
    assert summarize([1.125, 1.19, 1.25, 1.31, 1.375])["noisy"] is False


@pytest.mark.parametrize("threads", sorted({1, torch.get_num_threads()}))
def test_requested_thread_count_is_what_the_step_runs_with(threads):
    before = torch.get_num_threads()
    ThreadRecorder.seen.clear()
    record = time_model(linear_spec(ThreadRecorder, name="thread_recorder"), threads=threads, **FAST)
    assert record["threads"] == threads
    assert ThreadRecorder.seen and set(ThreadRecorder.seen) == {threads}
    assert torch.get_num_threads() == before


def test_linear_layer_flops_follow_the_matmul_formula():
    # forward: N x IN times IN x OUT is 2*N*IN*OUT; backward adds the weight gradient, another
    # 2*N*IN*OUT (the input needs no gradient, the bias gradient is a sum, not a matmul)
    forward = 2 * N * IN * OUT
    assert time_model(linear_spec(), mode="eval", **FAST)["flops"] == forward
    assert time_model(linear_spec(), mode="train", **FAST)["flops"] == 2 * forward


def test_peak_fraction_comes_from_the_calibration():
    threads = torch.get_num_threads()
    fake = {"device": "cpu", "dtype": "float32", "threads": threads, "flops_per_s": 1.0e9,
            "median_s": 1.0, "matmul_size": 0}
    peak.seed_cache(fake, quick=True)
    try:
        record = time_model(linear_spec(), mode="eval", threads=threads, **FAST)
    finally:
        peak.clear_cache()
    assert record["peak_calibration"] == fake
    assert record["peak_flops_per_s"] == 1.0e9
    assert record["peak_fraction"] == pytest.approx(record["achieved_flops_per_s"] / 1.0e9)


def test_calibration_is_measured_once_per_process():
    peak.clear_cache()
    first = peak.calibrate_peak("cpu", threads=1, quick=True)
    assert first["flops_per_s"] == pytest.approx(first["flops_per_matmul"] / first["median_s"])
    assert peak.calibrate_peak("cpu", threads=1, quick=True) == first


@pytest.mark.skipif(cuda_count() > 0, reason="this machine has a GPU")
@pytest.mark.parametrize("kwargs", [{"device": "cuda"}, {"setup": "cuda"}, {"setup": "dataparallel"},
                                    {"setup": "cuda-ddp", "world_size": 2}])
def test_absent_cuda_is_a_clear_error(kwargs):
    with pytest.raises(DeviceUnavailableError, match="cuda.*unavailable"):
        time_model("cifar10_lenet", **kwargs, **FAST)


@pytest.mark.skipif(cuda_count() > 0, reason="this machine has a GPU")
def test_absent_cuda_peak_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError):
        peak.calibrate_peak("cuda", "bfloat16")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "backward"}, "unknown mode"),
    ({"dtype": "float16"}, "unknown dtype"),
    ({"setup": "tpu"}, "unknown setup"),
    ({"setup": "cpu", "device": "cuda"}, "runs on cpu"),
    ({"setup": "cpu", "world_size": 2}, "world_size must be 1"),
    ({"threads": 0}, "threads must be"),
])
def test_bad_options_are_suite_errors(kwargs, message):
    with pytest.raises(SuiteError, match=message):
        time_model("cifar10_lenet", **kwargs, **FAST)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(SuiteError, match="cifar10_lenet"):
        time_model("no_such_model", **FAST)


def test_block_size_aims_at_ten_blocks_and_a_minimum_block_length():
    assert block_size(0.01, 1.0) == 10  # 1 s in 10 blocks is 0.1 s a block: ten 10 ms steps
    assert block_size(5.0, 1.0) == 1  # slow steps: one per block
    assert block_size(1e-4, 0.01, min_block_s=0.005) == 50  # a GPU block outlasts its two syncs


def _busy_step(cost_s: float, calls: list):
    def step():
        calls.append(1)
        end = time.perf_counter() + cost_s
        while time.perf_counter() < end:
            pass
    return step


def test_ranks_that_agree_run_the_same_steps_whatever_each_measures():
    """What DDP needs: one agreed estimate and one agreed stop, so every rank runs equal steps."""
    def run(step_cost_s):
        calls, votes = [], itertools.count()

        def agree(value):  # the estimate is the slowest rank's; the peer wants 7 blocks
            return 1e-3 if next(votes) == 0 else max(value, 1.0 if len(samples_seen) < 7 else 0.0)

        samples_seen = []
        sampling = measure(_busy_step(step_cost_s, calls), threads=1, devices=[torch.device("cpu")],
                           min_run_time=1e-6, warmup_steps=2, min_samples=5, time_cap_s=1.0,
                           agree=agree, between_blocks=lambda: samples_seen.append(1))
        return sampling, len(calls)

    fast, fast_calls = run(0.0)
    slow, slow_calls = run(2e-4)
    number = block_size(1e-3, 1e-6)
    assert (fast.steps_per_sample, len(fast.samples)) == (slow.steps_per_sample, len(slow.samples)) == (number, 7)
    # Exactly the warm-up, the probe and the blocks: no untimed steps hidden in each block.
    assert fast_calls == slow_calls == 2 + PROBE_STEPS + number * 7


def test_a_step_too_slow_for_the_minimum_count_stops_at_the_hard_cap():
    def slow_step():
        time.sleep(0.02)

    def sample(**rules):
        return measure(slow_step, threads=1, devices=[torch.device("cpu")], min_run_time=0.01,
                       warmup_steps=0, **rules)

    # One 20 ms step a block: the hard cap, twice time_cap_s (40 ms), comes after two blocks at most.
    capped = sample(min_samples=10, time_cap_s=0.02)
    assert capped.steps_per_sample == 1 and 1 <= len(capped.samples) <= 2
    assert capped.stop_reason == "time_cap"
    # With room under the cap the same step gives the minimum count, and no more (no precision target).
    roomy = sample(min_samples=3, time_cap_s=5.0)
    assert len(roomy.samples) == 3 and roomy.stop_reason == "min_samples"


def test_full_sampling_stops_at_the_precision_target_or_the_cap():
    steady = measure(_busy_step(1e-3, []), threads=1, devices=[torch.device("cpu")], min_run_time=0.01,
                     warmup_steps=1, min_samples=10, time_cap_s=5.0, target_precision=0.5)
    assert steady.stop_reason == "precision" and len(steady.samples) >= 10
    low, high = median_interval(steady.samples)
    assert (high - low) / 2 <= 0.5 * statistics.median(steady.samples)
    impossible = measure(_busy_step(1e-3, []), threads=1, devices=[torch.device("cpu")], min_run_time=0.01,
                         warmup_steps=1, min_samples=10, time_cap_s=0.1, target_precision=0.0)
    assert impossible.stop_reason == "time_cap" and len(impossible.samples) > 10


def test_a_block_is_its_steps_between_two_clock_reads_and_nothing_else():
    calls = []
    ticks = itertools.count()  # a clock that advances one second per read
    timer = timeit.Timer(lambda: calls.append(1), timer=lambda: float(next(ticks)))
    assert timed_block(timer, 4) == 0.25  # two reads, one second, four steps
    assert len(calls) == 4  # no untimed steps beside them (torch's Timer.timeit would add two)


def test_the_cpp_extension_cuda_notice_alone_is_filtered():
    logger = logging.getLogger("torch.utils.cpp_extension")

    def passes(message):
        return logger.filter(logging.LogRecord(logger.name, logging.WARNING, __file__, 1, message, (), None))

    assert not passes("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    assert passes("Error building extension 'foo'")


def test_iter_setups_reads_every_model_a_cpu_run_times_from_the_registry():
    cases = list(iter_setups(["cpu"], quick=True))
    timed = {(c.model, c.mode) for c in cases if c.kwargs["setup"] == "cpu"}
    assert timed == {(m, mode) for m in models_for("cpu") for mode in ("train", "eval")}
    assert {c.kwargs["setup"] for c in cases} == {"cpu"}  # CPU DDP and compiled figures: full runs
    assert all(c.kwargs["quick"] for c in cases)
    assert {c.kwargs["setup"] for c in iter_setups(["cpu"], models=["speech_cnn"])} >= {"cpu", "cpu-ddp", "cpu-compile"}


def test_full_cpu_setups_sweep_threads_up_to_all_cores():
    threads = {c.kwargs["threads"] for c in iter_setups(["cpu"], models=["speech_cnn"])
               if c.kwargs["setup"] == "cpu"}
    assert min(threads) == 1 and max(threads) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cores", "expected"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]),
                                                 (128, [1, 2, 4, 8, 16, 32, 64, 128])])
def test_thread_counts_are_powers_of_two_and_the_core_count(cores, expected):
    from suite.timing.plan import thread_counts

    assert thread_counts(cores) == expected


@pytest.mark.skipif(cuda_count() > 0, reason="this machine has a GPU")
def test_iter_setups_with_absent_cuda_is_an_error():
    with pytest.raises(DeviceUnavailableError):
        list(iter_setups(["cpu", "cuda"]))


@pytest.mark.skipif(cuda_count() >= 2, reason="this machine has several GPUs")
def test_multi_gpu_setups_carry_a_skip_reason_without_several_gpus(monkeypatch):
    monkeypatch.setattr("suite.timing.plan.require_device", lambda kind: None)
    cases = [c for c in iter_setups(["cuda"], quick=True) if c.kwargs["setup"] in ("dataparallel", "cuda-ddp")]
    assert cases and all("2 CUDA GPUs" in c.skip_reason for c in cases)


def test_batch_size_sweep_yields_one_record_per_size():
    records = list(sweep_batch_sizes("speech_cnn", [2, 5], mode="eval", **FAST))
    assert [r["batch_size"] for r in records] == [2, 5]
    assert records[1]["flops"] == pytest.approx(records[0]["flops"] * 5 / 2)


def test_scaling_efficiency_divides_by_world_size_times_the_baseline():
    def record(setup, world_size, throughput, threads=1):
        return {"model": "m", "mode": "train", "setup": setup, "world_size": world_size,
                "batch_size": 100, "dtype": "float32", "channels_last": False,
                "threads": threads, "throughput": throughput, "scaling_efficiency": None}

    records = attach_scaling_efficiency([record("cpu", 1, 1000.0), record("cpu", 1, 1800.0, threads=2),
                                         record("cpu-ddp", 2, 1500.0), record("cpu-ddp", 2, 900.0, threads=3)])
    assert records[2]["scaling_efficiency"] == pytest.approx(1500 / (2 * 1000))
    assert records[3]["scaling_efficiency"] is None  # no one-process baseline at 3 threads
    assert records[0]["scaling_efficiency"] is None


@pytest.mark.distributed
def test_cpu_ddp_times_rank_zero_with_equal_step_counts():
    record = time_model("speech_cnn", setup="cpu-ddp", world_size=2, threads=1, batch_size=8, **FAST)
    assert (record["setup"], record["world_size"], record["method"]) == ("cpu-ddp", 2, "timer_blocks")
    assert len(record["samples"]) >= 5 and record["canary_before_s"] > 0
    assert record["global_batch_size"] == 16
    assert record["throughput"] == pytest.approx(16 / record["median_s"])
    assert record["flops"] == 2 * time_model("speech_cnn", mode="train", batch_size=8, **FAST)["flops"]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [{}, {"dtype": "bfloat16"}, {"channels_last": True}],
                         ids=["fp32", "amp_bf16", "channels_last"])
def test_cuda_record_has_allocator_peak_and_event_time(variant):
    record = time_model("cifar10_lenet", device="cuda", batch_size=64, **variant, **FAST)
    assert (record["device"], record["setup"]) == ("cuda", "cuda")
    assert record["peak_mem_kind"] == "cuda_allocator_peak" and record["peak_mem_bytes"] > 0
    assert len(record["samples"]) >= 5 and record["steps_per_sample"] * record["median_s"] >= 0.005
    expected_peak = "bfloat16" if variant.get("dtype") == "bfloat16" else peak.peak_dtype_for("cuda", "float32")
    assert record["peak_calibration"]["dtype"] == expected_peak


@pytest.mark.multigpu
@pytest.mark.parametrize("setup", ["dataparallel", pytest.param("cuda-ddp", marks=pytest.mark.distributed)])
def test_multi_gpu_records_count_every_gpu(setup):
    gpus = cuda_count()
    record = time_model("speech_cnn", setup=setup, batch_size=32, **FAST)
    assert record["world_size"] == gpus and record["global_batch_size"] == 32 * gpus
    assert record["peak_flops_per_s"] == pytest.approx(record["peak_calibration"]["flops_per_s"] * gpus)


@pytest.mark.slow  # the script end to end: four fresh interpreters' timings, about 6 s
def test_validate_timing_reports_consistent_arithmetic():
    """Each printed figure follows from the others within their printed rounding; the PASS/FAIL
    verdicts, which depend on this machine's load, are not asserted."""
    import re
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "validate_timing.py")
    proc = subprocess.run([sys.executable, script, "--rounds", "1", "--quick",
                           "--min-run-time", "0.05", "--batch-size", "8", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    number = r"([0-9]+(?:\.[0-9]+)?)"
    found = {name: re.search(pattern, proc.stdout) for name, pattern in {
        "round": rf"round 1: core {number} ms, independent Timer {number} ms, bare loop {number} ms",
        "medians": rf"medians over rounds: core {number} ms, independent Timer {number} ms, "
                   rf"bare loop {number} ms",
        "agreement": rf"core / independent Timer = {number}, a difference of {number}%",
        "apart": rf"medians taken apart: {number}%",
        "overhead": rf"overhead: .* {number} ns, {number}% of the step",
        "cross_check": rf"core / bare loop - 1 = ([+-][0-9]+\.[0-9]+)%",
    }.items()}
    assert all(found.values()), (sorted(k for k, v in found.items() if not v), proc.stdout)
    figure = {name: [float(x) for x in match.groups()] for name, match in found.items()}
    core, independent, bare = figure["round"]
    ratio, difference = figure["agreement"]
    overhead_ns, overhead_pct = figure["overhead"]

    def printed(value, decimals, low, high):
        """Whether `value`, printed to `decimals`, is a true figure within [low, high] rounded."""
        half = 0.5 * 10 ** -decimals
        return low - half - 1e-12 <= value <= high + half + 1e-12

    def quotient(numerator, denominator, numerator_half=0.0005, half=0.0005):
        """Bounds of a / b for a and b printed to 3 decimals (ms): each within `half` of true."""
        return (max(numerator - numerator_half, 0.0) / (denominator + half),
                (numerator + numerator_half) / (denominator - half))

    assert figure["medians"] == figure["round"]  # one round: each median is that round's figure
    # agreement: the ratio of the printed medians; its difference is |ratio - 1| in percent
    low, high = quotient(core, independent)
    assert printed(ratio, 4, low, high), (ratio, core, independent)
    assert printed(difference, 2, abs(ratio - 1) * 100 - 0.005, abs(ratio - 1) * 100 + 0.005), (ratio, difference)
    low, high = quotient(abs(core - independent), independent, numerator_half=0.001)
    assert printed(figure["apart"][0], 2, 100 * low, 100 * high), (figure["apart"], core, independent)
    # overhead: the core's own cost per iteration (ns) over the core's median step (ms)
    assert overhead_ns > 0
    low, high = (overhead_ns - 0.5) * 1e-6 / (core + 0.0005), (overhead_ns + 0.5) * 1e-6 / (core - 0.0005)
    assert printed(overhead_pct, 4, 100 * low, 100 * high), (overhead_ns, overhead_pct, core)
    low, high = quotient(core, bare)
    assert printed(figure["cross_check"][0], 2, 100 * (low - 1), 100 * (high - 1)), (figure["cross_check"], core, bare)
