"""Feeding time_model's records into pytest-benchmark without timing anything twice.

pytest-benchmark's own loop would time `time_model` as a whole (model building, warm-up,
calibration and all). Instead the call goes through `benchmark.pedantic` once, for the
fixture's bookkeeping (disabled mode, "fixture used"), and its single round is then replaced
by the core's raw samples, seconds per iteration. pytest-benchmark's min/median/IQR/ops, its
JSON and --benchmark-compare(-fail) are then about one iteration of the model, as timed by
the core. Only `benchmark.stats.stats.data`, the list pytest-benchmark computes its statistics
from, is touched.
"""
from __future__ import annotations

# Options that ask for real benchmark figures; without any, a test run gets quick ones.
_REQUESTING_OPTIONS = ("benchmark_only", "benchmark_enable", "benchmark_json", "benchmark_save",
                       "benchmark_autosave", "benchmark_compare", "benchmark_compare_fail",
                       "benchmark_histogram")

EXTRA_INFO_FIELDS = ("device", "setup", "mode", "batch_size", "global_batch_size", "threads",
                     "world_size", "dtype", "channels_last", "flops", "throughput",
                     "achieved_flops_per_s", "peak_flops_per_s", "peak_fraction", "noisy",
                     "iqr_fraction", "flags", "ci_half_width_fraction", "attempts",
                     "steps_per_sample", "method", "peak_mem_bytes", "peak_mem_kind", "quick",
                     "torch", "settings")


def benchmarks_requested(config) -> bool:
    """Whether this pytest run asked for benchmark figures (else CI runs keep them quick)."""
    return any(config.getoption(name, None) for name in _REQUESTING_OPTIONS)


def benchmark_time_model(benchmark, model: str, *, quick: bool, **kwargs) -> dict:
    """Time `model` with the core and make `benchmark`'s statistics the core's samples."""
    from suite.timing.core import time_model

    record = benchmark.pedantic(time_model, args=(model,), kwargs={"quick": quick, **kwargs},
                                rounds=1, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing to report
        benchmark.stats.stats.data[:] = record["samples"]
        benchmark.stats.iterations = record["steps_per_sample"]  # shown as "Iterations"
    benchmark.extra_info.update({key: record[key] for key in EXTRA_INFO_FIELDS})
    benchmark.extra_info["timed_by"] = "suite.timing.time_model (timeit.Timer blocks)"
    return record
