"""The machine's limits, declared once: what each measures, on which devices, in which unit, at which sizes.

suite.timing.limits measures them with the timing core (one `limit` record per limit, device,
dtype or operation, and size where the figure is per size); `torchsuite run` has a limits step
per device; the report's first screen shows them as "machine limits".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from suite.cases.registry import Registry


@dataclass(frozen=True)
class LimitSpec:
    kind: ClassVar[str] = "limit"
    name: str
    devices: tuple[str, ...]  # device kinds it applies to; elsewhere it is skipped with a reason
    measures: str  # what the figure is, in words
    unit: str  # the unit of `value` in its records
    sizes: tuple[int, ...]  # the sweep (matrix side, bytes or elements, per limit)
    quick_sizes: tuple[int, ...]
    variants: tuple[str, ...] = ()  # dtypes or operations, one record each
    gpu_variants: tuple[str, ...] = ()  # added on GPUs
    estimate_s: tuple[float, float] = (2.0, 6.0)  # (quick, full) seconds of a small machine, for --dry-run
    # These variants are timed at every size, the others at the largest only (None: all at every size).
    sweep_variants: tuple[str, ...] | None = None
    quick: bool = True  # measured by `torchsuite run --quick` when --limits names none
    per_size: bool = False  # each size is a figure of its own (a fleet compares size with size); else one per variant

    def figures(self, device: str, quick: bool) -> list[tuple[str, int]]:
        """(variant, size) of each figure, variant by variant."""
        sizes = self.quick_sizes if quick else self.sizes
        every = self.variants_for(device) if self.sweep_variants is None else self.sweep_variants
        return [(v, s) for v in self.variants_for(device) for s in (sizes if v in every else sizes[-1:])]

    def describe(self) -> str:
        return f"{self.measures} ({self.unit}; {', '.join(self.devices)})"

    def variants_for(self, device: str) -> tuple[str, ...]:
        return self.variants + (self.gpu_variants if device == "cuda" else ())


MB = 1 << 20
KB = 1 << 10

LIMITS = (
    LimitSpec("gemm", ("cpu", "cuda"), "n x n matmul, 2n^3 FLOP, best over the sizes", "GFLOP/s",
              sizes=(1024, 2048), quick_sizes=(1024,), variants=("float32", "bfloat16"),
              gpu_variants=("tfloat32", "float16"), estimate_s=(2.5, 12.0)),
    # STREAM's counting: copy moves 2 x 8 bytes an element, triad (a = b + s*c) 3 x 8.
    LimitSpec("memory_bandwidth", ("cpu", "cuda"),
              "float64 copy and STREAM triad over buffers of 4x the last-level cache (at least the size given)",
              "GB/s", sizes=(256 * MB,), quick_sizes=(64 * MB,), variants=("copy", "triad"), estimate_s=(3.0, 13.0)),
    LimitSpec("launch_latency", ("cpu", "cuda"),
              "wall time of one tiny op (x.add_(1) on one element); on GPUs also device time by CUDA events",
              "us", sizes=(1,), quick_sizes=(1,), variants=("wall",), gpu_variants=("device",), estimate_s=(1.0, 2.0)),
    LimitSpec("host_device_copy", ("cuda",), "host to device and back, pinned and pageable host memory",
              "GB/s", sizes=(256 * MB,), quick_sizes=(64 * MB,),
              variants=("h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable"), estimate_s=(3.0, 6.0)),
    # nccl-tests' busbw: algbw times 2(n-1)/n (all_reduce), (n-1)/n (all_gather, reduce_scatter), 1 (broadcast).
    LimitSpec("collectives", ("cpu", "cuda"),
              "gloo (CPU) or NCCL (GPU) collectives over 2 ranks of the worker pool; algbw and busbw as nccl-tests",
              "GB/s", sizes=(8 * KB, 1 * MB, 64 * MB), quick_sizes=(8 * KB, 4 * MB),
              variants=("all_reduce", "all_gather", "reduce_scatter", "broadcast"), estimate_s=(8.0, 48.0),
              sweep_variants=("all_reduce",), quick=False, per_size=True),  # its pool's start is most of its quick 8 s
)


CASES: Registry[LimitSpec] = Registry("limit")
for _spec in LIMITS:
    CASES.add(_spec)
