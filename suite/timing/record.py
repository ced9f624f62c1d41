"""The timing record: one JSON-ready dict per (model, mode, setup), stored as is.

A figure's record is made in one place, build_record, from what was asked (TimingOptions, as
torch.utils.benchmark's TaskSpec) and what one process measured (ProcessMeasurement, as its
Measurement: the loop's Sampling, the machine's Trust, memory, settings, compile times).

Fields:

    kind                  "timing"
    model, mode           registered model name; "train" (zero_grad, forward, loss, backward,
                          optimizer step) or "eval" (forward under inference_mode)
    device                "cpu" or "cuda"
    setup                 "cpu", "cpu-ddp", "cuda", "cuda-ddp", "dataparallel", "cpu-compile"
                          or "cuda-compile"
    world_size            processes (DDP) or GPUs (DataParallel) working on one iteration; 1 else
    batch_size            samples per device (per rank for DDP, per GPU for DataParallel)
    global_batch_size     samples per iteration over all devices: batch_size * world_size
    threads               torch intra-op threads (per rank for DDP), set on the Timer
    dtype                 "float32", or "bfloat16" for AMP autocast (parameters stay fp32)
    channels_last         whether model and inputs used the channels_last memory format
    median_s, iqr_s       median (of a run's figure: the median of its processes' medians) and
                          interquartile range of `samples`, seconds per iteration
    iqr_fraction, noisy   iqr_s / median_s, and whether it is 10% or more (not to be trusted alone)
    ci95_low_s, ci95_high_s   95% interval of the median: for a run's figure, between processes
                          (interval_method "between_processes", suite.timing.processes); for one
                          process, distribution-free from its samples (None under 6 samples),
                          which says nothing of a rerun
    ci_half_width_fraction    half that interval's width over the median: the figure's precision
    flags                 what is wrong with the figure, [] when clean: noisy, contended, drift,
                          few_samples, throttled, quick, one_process (suite.timing.figure says
                          each one's rule)
    samples               raw samples, seconds per iteration, each the mean of one block (a
                          run's figure: every process's, pooled)
    processes             a run's figure: per process median_s, iqr_s, samples, flags, canaries,
                          warm-up and stop reason (absent on time_model's one-process records)
    process_log_sd        the figure's between-process standard deviation of log medians: the
                          typical one of the run's figures of the setup, or its own where larger
                          (suite.timing.processes)
    steps_per_sample      iterations in each block
    warmup_steps          untimed iterations before the first block
    warmup_s              seconds of warm-up blocks until the step time settled (suite.timing.measure)
    method                "timer_blocks": blocks, each one timeit.Timer.timeit(number) (the loop
                          torch.utils.benchmark.Timer runs; suite.timing.measure)
    stop_reason           why sampling stopped: "precision" (interval within target_precision),
                          "time_cap" (the hard cap: with fewer than min_samples, flagged
                          few_samples), or "min_samples" (quick runs: no precision target)
    min_run_time, min_samples, target_precision, time_cap_s   the sampling rules it ran under
    attempts              measurements taken (a contended or drifting one is repeated)
    canary_before_s, canary_after_s   the fixed canary matmul around the figure (suite.timing.canary)
    load                  what others did on this process's cores during the last attempt:
                          others_cores, steal_cores, own_cores, throttled_s (cgroup quota)
    sample_others_cores   others' cores during each block (coarse: the kernel counts in 10 ms ticks)
    settings              TF32, cuDNN and determinism flags and threads the timing process had
    throughput            samples per second: global_batch_size / median_s
    latency_p50_s, latency_p90_s, latency_p99_s   mode "serve" only: percentiles of its
                          samples, each one call at batch 1 (pooled over a figure's processes)
    tokens_per_s          a language model's throughput in tokens (throughput x tokens per
                          sample, ModelSpec.tokens_per_sample); None for other models
    peak_mem_bytes        CUDA allocator peak (largest over the GPUs used) on GPU; the process's
                          peak RSS since it started on CPU (rank 0's for DDP)
    peak_mem_kind         "cuda_allocator_peak" or "process_peak_rss"
    flops                 FLOPs of one iteration over all devices (FlopCounterMode)
    achieved_flops_per_s  flops / median_s
    peak_flops_per_s      calibrated peak of the hardware used (per-GPU peak * GPUs; CPU peak at
                          the threads used)
    peak_fraction         achieved_flops_per_s / peak_flops_per_s
    peak_calibration      the calibrate_peak() record it was computed from
    scaling_efficiency    throughput / (world_size * single-device throughput), set by
                          suite.timing.plan.attach_scaling_efficiency; None until then
    compile_backend       the torch.compile backend of the compile setups (cpu-compile,
                          cuda-compile); None for eager
    compile_cold_s, compile_warm_s   wall time of the first compiled step with an empty
                          compile cache, and again over the cache it filled (suite.timing.compiled);
                          None in a run's later processes, which compile once untimed
    quick                 whether the quick (short, smoke-level) settings were used
    torch                 torch.__version__
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from suite.timing.compiled import CompileTimes
from suite.timing.figure import Trust, figure_flags
from suite.timing.measure import Sampling
from suite.timing.options import TimingOptions
from suite.timing.stats import latency_percentiles, summarize

KIND = "timing"


@dataclass(frozen=True)
class ProcessMeasurement:
    """What one process measured of a figure (rank 0's, for DDP): what each setup returns."""

    sampling: Sampling
    trust: Trust
    peak_mem_bytes: int
    peak_mem_kind: str  # "cuda_allocator_peak" or "process_peak_rss" (suite.timing.memory)
    settings: dict  # suite.timing.settings.current_settings() in the timing process
    compile_times: CompileTimes | None = None  # the compile setups only


def build_record(*, model: str, options: TimingOptions, measured: ProcessMeasurement, flops: int | None,
                 calibration: dict | None, tokens_per_sample: int = 0) -> dict:
    """flops and calibration None: a figure without them (a user's function, suite.timing.function)."""
    sampling, trust = measured.sampling, measured.trust
    summary = summarize(sampling.samples)
    global_batch = options.batch_size * options.world_size
    achieved = flops / summary["median_s"] if flops is not None else None
    peak_total = calibration["flops_per_s"] * options.peak_devices if calibration else None
    peak_fraction = achieved / peak_total if achieved is not None and peak_total else None
    flags = figure_flags(noisy=summary["noisy"], sampling=sampling, trust=trust, options=options,
                         peak_fraction=peak_fraction)
    return {
        "kind": KIND,
        "model": model,
        "mode": options.mode,
        "device": options.device,
        "setup": options.setup,
        "world_size": options.world_size,
        "batch_size": options.batch_size,
        "global_batch_size": global_batch,
        "threads": options.threads,
        "dtype": options.dtype,
        "channels_last": options.channels_last,
        **summary,
        "flags": flags,
        "samples": list(sampling.samples),
        "steps_per_sample": sampling.steps_per_sample,
        "warmup_steps": sampling.warmup_steps,
        "warmup_s": sampling.settling.seconds if sampling.settling else None,
        "method": "timer_blocks",
        "interval_method": "within_process",
        "stop_reason": sampling.stop_reason,
        "min_run_time": options.min_run_time,
        "min_samples": options.min_samples,
        "target_precision": options.target_precision,
        "time_cap_s": options.time_cap_s,
        "attempts": trust.attempts,
        "canary_before_s": trust.canary_before_s,
        "canary_after_s": trust.canary_after_s,
        "load": trust.load.to_dict(),
        "sample_others_cores": list(trust.sample_others_cores),
        "settings": measured.settings,
        "throughput": global_batch / summary["median_s"],
        "tokens_per_s": global_batch * tokens_per_sample / summary["median_s"] if tokens_per_sample else None,
        **(latency_percentiles(sampling.samples) if options.steps_per_sample == 1 else {}),
        "peak_mem_bytes": measured.peak_mem_bytes,
        "peak_mem_kind": measured.peak_mem_kind,
        "flops": flops,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak_total,
        "peak_fraction": peak_fraction,
        "peak_calibration": calibration,
        "scaling_efficiency": None,
        "compile_backend": options.compile_backend,
        "compile_cold_s": measured.compile_times.cold_s if measured.compile_times else None,
        "compile_warm_s": measured.compile_times.warm_s if measured.compile_times else None,
        "quick": options.quick,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
