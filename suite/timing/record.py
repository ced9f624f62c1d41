"""The timing record: one JSON-ready dict per (model, mode, setup), stored as is.

Fields:

    kind                  "timing"
    model, mode           registered model name; "train" (zero_grad, forward, loss, backward,
                          optimizer step) or "eval" (forward under inference_mode)
    device                "cpu" or "cuda"
    setup                 "cpu", "cpu-ddp", "cuda", "cuda-ddp" or "dataparallel"
    world_size            processes (DDP) or GPUs (DataParallel) working on one iteration; 1 else
    batch_size            samples per device (per rank for DDP, per GPU for DataParallel)
    global_batch_size     samples per iteration over all devices: batch_size * world_size
    threads               torch intra-op threads (per rank for DDP), set on the Timer
    dtype                 "float32", or "bfloat16" for AMP autocast (parameters stay fp32)
    channels_last         whether model and inputs used the channels_last memory format
    median_s, iqr_s       median and interquartile range of `samples`, seconds per iteration
    iqr_fraction, noisy   iqr_s / median_s, and whether it is over 10% (not to be trusted alone)
    samples               raw samples, seconds per iteration, each the mean of one block
    steps_per_sample      iterations in each block
    warmup_steps          untimed iterations before the first block
    method                "blocked_autorange" (one process) or "fixed_blocks" (DDP ranks, who
                          must run equal step counts); both torch.utils.benchmark.Timer
    min_run_time          seconds of timed iterations asked for
    throughput            samples per second: global_batch_size / median_s
    device_s              GPU seconds per iteration from CUDA events (one-GPU setups), else None
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
    quick                 whether the quick (short, smoke-level) settings were used
    torch                 torch.__version__
"""
from __future__ import annotations

import torch

from suite.timing.stats import summarize

KIND = "timing"


def build_record(*, model: str, options, sampling, peak_mem: tuple[int, str], flops: int,
                 calibration: dict, device_s: float | None) -> dict:
    summary = summarize(sampling.samples)
    global_batch = options.batch_size * options.world_size
    achieved = flops / summary["median_s"]
    peak_total = calibration["flops_per_s"] * options.peak_devices
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
        "samples": list(sampling.samples),
        "steps_per_sample": sampling.steps_per_sample,
        "warmup_steps": sampling.warmup_steps,
        "method": sampling.method,
        "min_run_time": options.min_run_time,
        "throughput": global_batch / summary["median_s"],
        "device_s": device_s,
        "peak_mem_bytes": peak_mem[0],
        "peak_mem_kind": peak_mem[1],
        "flops": flops,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak_total,
        "peak_fraction": achieved / peak_total,
        "peak_calibration": calibration,
        "scaling_efficiency": None,
        "quick": options.quick,
        "torch": torch.__version__,
    }
