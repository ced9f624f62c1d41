"""The machine's measured peak FLOP/s: a large matmul, timed once per process and cached.

Achieved FLOP/s means little on its own; as a fraction of what this machine's GEMM reaches it
says how far a model is from compute-bound. The calibration is kept with every record.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from suite.devices import require_device
from suite.errors import SuiteError
from suite.threads import usable_cores
from suite.timing.figure import figure_flags, measure_figure
from suite.timing.options import TimingOptions, sampling_rules
from suite.timing.stats import summarize

# dtype name -> (tensor dtype, whether TF32 tensor cores are allowed)
PEAK_DTYPES = {
    "float32": (torch.float32, False),
    "tfloat32": (torch.float32, True),
    "bfloat16": (torch.bfloat16, False),
}
# Big enough to be compute-bound and saturate the device, small enough to run in about a second.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
QUICK_MATMUL_SIZE = {"cpu": 1024, "cuda": 4096}

_CACHE: dict[tuple, dict] = {}


@contextmanager
def _tf32(allowed: bool):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def calibrate_peak(device: str = "cpu", dtype: str = "float32", threads: int | None = None,
                   quick: bool = False) -> dict:
    """Peak FLOP/s of an n x n matmul on `device` ("cpu" or "cuda", meaning cuda:0) in `dtype`.

    dtype: "float32" (CPU and GPU), "bfloat16", or "tfloat32" (GPU, fp32 matmul on TF32 tensor
    cores). threads: CPU threads (default all cores); the peak of 1 thread is the fair
    denominator for a 1-thread run. Cached per process by (device, dtype, threads, quick).
    """
    kind = torch.device(device).type
    require_device(kind)
    if dtype not in PEAK_DTYPES or (dtype == "tfloat32" and kind != "cuda"):
        raise SuiteError(f"no peak calibration for dtype {dtype!r} on {kind}; "
                         f"valid: float32, bfloat16{', tfloat32' if kind == 'cuda' else ''}")
    threads = threads or usable_cores()
    key = (kind, dtype, threads, quick)
    if key not in _CACHE:
        _CACHE[key] = _measure_peak(kind, dtype, threads, quick)
    return dict(_CACHE[key])


def _measure_peak(kind: str, dtype: str, threads: int, quick: bool) -> dict:
    torch_dtype, tf32 = PEAK_DTYPES[dtype]
    n = (QUICK_MATMUL_SIZE if quick else MATMUL_SIZE)[kind]
    target = torch.device(kind)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(target, torch_dtype)
    b = torch.randn(n, n, generator=g).to(target, torch_dtype)
    # A figure sampled as a model's is: an eval-mode forward of n rows through an n x n map, in
    # one process, with its own warm-up (thread pools, cuBLAS handles and heuristics).
    options = replace(TimingOptions(mode="eval", device=kind, setup=kind, world_size=1, batch_size=n,
                                    threads=threads, dtype=dtype, channels_last=False, **sampling_rules(quick)),
                      warmup_steps=3)
    with _tf32(tf32):
        sampling, trust = measure_figure(lambda: torch.mm(a, b), options=options, devices=[a.device])
    summary = summarize(sampling.samples)
    flops = 2 * n ** 3
    return {
        "device": kind,
        "device_name": torch.cuda.get_device_name(0) if kind == "cuda" else None,
        "dtype": dtype,
        "threads": threads,
        "matmul_size": n,
        "flops_per_matmul": flops,
        **summary,
        "flags": figure_flags(noisy=summary["noisy"], sampling=sampling, trust=trust, options=options),
        "flops_per_s": flops / summary["median_s"],
        "samples": list(sampling.samples),
        "attempts": trust.attempts,
    }


def clear_cache() -> None:
    _CACHE.clear()


def seed_cache(calibration: dict, quick: bool = False) -> None:
    """Use a known calibration instead of measuring (tests, or reusing a stored run's)."""
    key = (calibration["device"], calibration["dtype"], calibration["threads"], quick)
    _CACHE[key] = dict(calibration)


def peak_dtype_for(device_kind: str, dtype: str) -> str:
    """Which calibration is the fair denominator for a model run in `dtype` on `device_kind`.

    On GPUs, PyTorch runs fp32 convolutions on TF32 tensor cores by default
    (torch.backends.cudnn.allow_tf32), and convolutions are most of these models' FLOPs.
    """
    if dtype == "bfloat16":
        return "bfloat16"
    if device_kind == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tfloat32"
    return "float32"
