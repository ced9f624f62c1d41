"""The machine's limits (suite.cases.limits), each figure timed by the timing core.

Every figure goes through measure_figure, as a model's does: warm-up, blocks, the canary before
and after, the contention watch, re-measurement of a disturbed attempt, and `flags` (noisy,
contended, drift, few_samples, throttled, quick, one_process: a limit is measured in the run's
own process, so its interval does not say what a rerun gives). One `limit` record per limit,
device and variant (dtype or operation), and per size for collectives, whose figure depends on it:

    gemm              2 n^3 / median time of an n x n matmul, the best size of the sweep (GFLOP/s)
    memory_bandwidth  bytes moved / time as STREAM counts them: copy 2 x 8 bytes an element,
                      triad a = b + s*c 3 x 8, over float64 buffers of at least 4x the
                      last-level cache (GB/s, 1e9 bytes)
    launch_latency    time of one x.add_(1) on a one-element tensor (us); on GPUs `wall` is the
                      host's enqueue rate with the device synchronised every block, `device` the
                      kernel's time by CUDA events (not through measure_figure: no canary)
    host_device_copy  bytes / time of one copy between host and GPU, pinned or pageable (GB/s)
    collectives       nccl-tests' algbw = S / t and busbw = algbw x factor over the worker pool's
                      2 ranks, S the buffer (all_reduce, broadcast), the gathered output
                      (all_gather) or the scattered input (reduce_scatter); factor 2(n-1)/n for
                      all_reduce, (n-1)/n for all_gather and reduce_scatter, 1 for broadcast
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from suite.cases.limits import CASES, LimitSpec
from suite.devices import require_device
from suite.threads import torch_threads, usable_cores
from suite.timing.figure import figure_flags, measure_figure
from suite.timing.options import TimingOptions, sampling_rules
from suite.timing.peak import _tf32
from suite.timing.stats import summarize

WORLD_SIZE = 2  # collectives' ranks: the smallest group that moves data, and all a 2-core machine holds
LLC_FACTOR = 4  # STREAM's rule: each array at least 4x the sum of the caches
GEMM_DTYPES = {"float32": (torch.float32, False), "tfloat32": (torch.float32, True),
               "bfloat16": (torch.bfloat16, False), "float16": (torch.float16, False)}
BUS_FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
              "reduce_scatter": lambda n: (n - 1) / n, "broadcast": lambda n: 1.0}


def bus_bandwidth(op: str, algbw: float, world_size: int) -> float:
    """nccl-tests' busbw: the bandwidth a link needs for this algbw, comparable across ops and sizes."""
    return algbw * BUS_FACTOR[op](world_size)


def last_level_cache_bytes() -> int | None:
    """The CPU's largest cache (sysfs), or None where it cannot be read."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def buffer_bytes(spec_bytes: int, kind: str) -> int:
    """Each array's size: the registry's, or 4x the last-level cache where that is larger."""
    if kind == "cuda":
        cache = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", None)
    else:
        cache = last_level_cache_bytes()
    return max(spec_bytes, LLC_FACTOR * cache) if cache else spec_bytes


def _options(kind: str, threads: int, quick: bool, dtype: str = "float32", setup: str | None = None,
             world_size: int = 1) -> TimingOptions:
    return TimingOptions(mode="eval", device=kind, setup=setup or kind, world_size=world_size, batch_size=1,
                         threads=threads, dtype=dtype, channels_last=False, **sampling_rules(quick))


def _figure(step: Callable[[], None], options: TimingOptions, devices: list[torch.device],
            agree: Callable[[float], float] | None = None) -> dict:
    """One figure by the timing core: its summary, flags and samples."""
    with torch_threads(options.threads):
        sampling, trust = measure_figure(step, options=options, devices=devices, agree=agree)
    summary = summarize(sampling.samples)
    return {**summary, "flags": figure_flags(noisy=summary["noisy"], sampling=sampling, trust=trust, options=options),
            "samples": list(sampling.samples), "attempts": trust.attempts,
            "canary_before_s": trust.canary_before_s, "canary_after_s": trust.canary_after_s}


def _record(spec: LimitSpec, kind: str, variant: str, threads: int, quick: bool, **fields) -> dict:
    return {"kind": "limit", "limit": spec.name, "device": kind,
            "device_name": torch.cuda.get_device_name(0) if kind == "cuda" else None,
            "variant": variant, "unit": spec.unit, "threads": threads, "quick": quick, **fields}


def measure_limit(name: str, device: str = "cpu", quick: bool = False) -> Iterator[dict]:
    """The `limit` records of one limit on `device` ("cpu" or "cuda"); `skipped` where it does not apply."""
    spec = CASES.get(name)
    kind = torch.device(device).type
    if kind not in spec.devices:
        yield {"kind": "skipped", "stage": "limits", "limit": name, "device": kind,
               "reason": f"{name} applies to {', '.join(spec.devices)} only"}
        return
    require_device(kind)
    yield from _MEASURE[name](spec, kind, spec.quick_sizes if quick else spec.sizes, quick)


def _gemm(spec, kind, sizes, quick):
    threads = usable_cores()
    target = torch.device(kind)
    for dtype in spec.variants_for(kind):
        torch_dtype, tf32 = GEMM_DTYPES[dtype]
        sweep = []
        for n in sizes:
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g).to(target, torch_dtype)
            b = torch.randn(n, n, generator=g).to(target, torch_dtype)
            with _tf32(tf32):
                figure = _figure(lambda: torch.mm(a, b), replace(_options(kind, threads, quick, dtype), warmup_steps=3),
                                 [target])
            sweep.append({"size": n, "value": 2 * n ** 3 / figure["median_s"] / 1e9, **figure})
            del a, b
        best = max(sweep, key=lambda s: s["value"])
        yield _record(spec, kind, dtype, threads, quick, **best,
                      sweep=[{k: s[k] for k in ("size", "value", "median_s", "flags")} for s in sweep])


def _memory_bandwidth(spec, kind, sizes, quick):
    threads = usable_cores()
    target = torch.device(kind)
    for size in sizes:
        n = buffer_bytes(size, kind) // 8
        a, b, c = (torch.full((n,), v, dtype=torch.float64, device=target) for v in (1.0, 2.0, 0.5))
        steps = {"copy": (lambda: b.copy_(a), 2), "triad": (lambda: torch.add(b, c, alpha=3.0, out=a), 3)}
        for variant in spec.variants_for(kind):
            step, arrays = steps[variant]
            figure = _figure(step, _options(kind, threads, quick, "float64"), [target])
            moved = arrays * n * 8
            yield _record(spec, kind, variant, threads, quick, size=n * 8, bytes_moved=moved,
                          value=moved / figure["median_s"] / 1e9, **figure)
        del a, b, c


def _launch_latency(spec, kind, sizes, quick):
    target = torch.device(kind)
    x = torch.zeros(1, device=target)
    figure = _figure(lambda: x.add_(1), _options(kind, 1, quick), [target])
    yield _record(spec, kind, "wall", 1, quick, size=1, value=figure["median_s"] * 1e6, **figure)
    if kind == "cuda":
        yield _record(spec, kind, "device", 1, quick, size=1, **_event_latency(x, quick))


def _event_latency(x: torch.Tensor, quick: bool, launches: int = 1000) -> dict:
    """Per-kernel device time of back-to-back tiny kernels, by CUDA events around blocks of launches."""
    rules = sampling_rules(quick)
    samples = []
    for _ in range(rules["min_samples"] * 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(launches):
            x.add_(1)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / launches)
    summary = summarize(samples[len(samples) // 2:])  # the first half is warm-up
    flags = [f for f, on in (("noisy", summary["noisy"]), ("quick", quick), ("one_process", True)) if on]
    return {**summary, "value": summary["median_s"] * 1e6, "flags": flags, "samples": samples[len(samples) // 2:],
            "attempts": 1}


def _host_device_copy(spec, kind, sizes, quick):
    gpu = torch.device("cuda", 0)
    for size in sizes:
        device_buffer = torch.empty(size, dtype=torch.uint8, device=gpu)
        for variant in spec.variants_for(kind):
            direction, memory = variant.split("_")
            host = torch.empty(size, dtype=torch.uint8, pin_memory=(memory == "pinned"))
            step = ((lambda: device_buffer.copy_(host, non_blocking=True)) if direction == "h2d"
                    else (lambda: host.copy_(device_buffer, non_blocking=True)))
            figure = _figure(step, _options(kind, 1, quick, "uint8"), [gpu])
            yield _record(spec, kind, variant, 1, quick, size=size, bytes_moved=size,
                          value=size / figure["median_s"] / 1e9, **figure)


def _collectives(spec, kind, sizes, quick):
    from suite.devices import default_backend
    from suite.distributed.pool import get_pool

    if kind == "cpu" and usable_cores() < WORLD_SIZE:
        yield {"kind": "skipped", "stage": "limits", "limit": spec.name, "device": kind,
               "reason": f"needs {WORLD_SIZE} cores, one a rank"}
        return
    if kind == "cuda" and torch.cuda.device_count() < WORLD_SIZE:
        yield {"kind": "skipped", "stage": "limits", "limit": spec.name, "device": kind,
               "reason": f"NCCL collectives need {WORLD_SIZE} GPUs; this machine has {torch.cuda.device_count()}"}
        return
    pool = get_pool(WORLD_SIZE, backend=default_backend(kind), device=kind)
    rules = sampling_rules(quick)
    figures = [(op, size) for op, size in spec.figures(kind, quick) if size in sizes]
    timeout = 60.0 + len(figures) * rules["attempts"] * (rules["quiet_budget_s"] + 3 * rules["time_cap_s"])
    threads = max(1, usable_cores() // WORLD_SIZE) if kind == "cpu" else 1
    answers = pool.run(collective_rank, kind, figures, threads, quick, timeout=timeout)
    for figure in answers[0]:
        op, size = figure.pop("op"), figure.pop("size")
        if "reason" in figure:
            yield {"kind": "skipped", "stage": "limits", "limit": spec.name, "device": kind, "variant": op,
                   "size": size, "reason": figure["reason"]}
            continue
        algbw = size / figure["median_s"] / 1e9
        yield _record(spec, kind, op, threads, quick, size=size, world_size=WORLD_SIZE, algbw=algbw,
                      busbw=bus_bandwidth(op, algbw, WORLD_SIZE), bus_factor=BUS_FACTOR[op](WORLD_SIZE),
                      value=bus_bandwidth(op, algbw, WORLD_SIZE), **figure)


def collective_rank(rank: int, world_size: int, kind: str, figures: list[tuple[str, int]], threads: int,
                    quick: bool) -> list[dict]:
    """Runs in every pool worker: each (op, size) figure (S bytes as nccl-tests count it), timed by the
    core with the ranks agreeing on every decision (the slowest rank's), as DDP timings do."""
    import torch.distributed as dist

    device = torch.device("cuda", rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)

    def slowest_rank(value: float) -> float:
        shared = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        return float(shared.item())

    options = _options(kind, threads, quick, "float32", setup=f"{kind}-ddp", world_size=world_size)
    out = []
    for op, size in figures:
        count = max(world_size, size // 4 // world_size * world_size)  # float32 elements, divisible by ranks
        full = torch.ones(count, device=device)
        part = torch.ones(count // world_size, device=device)
        step = {"all_reduce": lambda: dist.all_reduce(full),
                "all_gather": lambda: dist.all_gather_into_tensor(full, part),
                "reduce_scatter": lambda: dist.reduce_scatter_tensor(part, full),
                "broadcast": lambda: dist.broadcast(full, src=0)}[op]
        try:
            step()  # an op the backend lacks fails here on every rank alike
        except (RuntimeError, NotImplementedError) as err:
            out.append({"op": op, "size": count * 4, "reason": f"{dist.get_backend()} {op}: {err}".splitlines()[0]})
            continue
        out.append({"op": op, "size": count * 4, **_figure(step, options, [device], agree=slowest_rank)})
    return out


_MEASURE = {"gemm": _gemm, "memory_bandwidth": _memory_bandwidth, "launch_latency": _launch_latency,
            "host_device_copy": _host_device_copy, "collectives": _collectives}


def check_record(record: dict) -> None:
    """Raise ValueError unless a limit record has its fields, a positive finite value and the registry's unit."""
    spec = CASES.get(record["limit"])
    for field in ("device", "variant", "unit", "value", "median_s", "flags", "samples"):
        if field not in record:
            raise ValueError(f"limit record {record['limit']} lacks {field!r}")
    if record["unit"] != spec.unit or not (math.isfinite(record["value"]) and record["value"] > 0):
        raise ValueError(f"limit record {record['limit']}/{record['variant']}: {record['value']!r} {record['unit']}")
