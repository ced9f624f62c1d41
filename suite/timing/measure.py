"""The measurement loop: warm-up, then blocks of steps, each timed by the stdlib's timeit.Timer.

One loop for every setup. A probe of a few steps estimates the step time; blocks are sized so
that about TARGET_SAMPLES of them fill `min_run_time` (and, on a GPU, so that each block is long
enough for the synchronisation at its ends to be negligible). Warm-up goes on, in blocks, until
the step time settles: at least `warmup_s` seconds, and until a block is no longer faster than
every block before it by more than SETTLED_FRACTION (a fixed count of warm-up steps left quick
figures 1.2-1.5x slow on this project's 2-core VM: allocator and thread-pool warm-up lasted
longer than two steps). Then blocks are timed until

- there are at least `min_samples` of them and `min_run_time` has passed, and
- when `target_precision` is set (full runs), the 95% interval of the median is within that
  fraction of it, or `time_cap_s` has passed (the way Phoronix's dynamic run count works);

or until HARD_CAP_FACTOR times `time_cap_s` has passed, whatever the count: a step too slow for
`min_samples` blocks in that time stops early, with fewer samples, and its figure is flagged
few_samples (suite.timing.figure). The block that crosses a cap is the last.

Each block is one `timeit.Timer.timeit(number)`, the loop torch.utils.benchmark.Timer itself
runs (garbage collection off inside it), with a clock that synchronises every CUDA device used.
DDP ranks must all run the very same number of steps, or one rank waits forever in an
all-reduce the others never start: with `agree` (the slowest rank's value of a float), ranks
share one step estimate and one decision to stop after every block.
"""
from __future__ import annotations

import math
import statistics
import timeit
from dataclasses import dataclass
from typing import Callable

import torch

from suite.threads import torch_threads
from suite.timing.stats import median_interval

TARGET_SAMPLES = 10
PROBE_STEPS = 3
SETTLED_FRACTION = 0.03
WARMUP_CAP_FACTOR = 4  # warm-up stops after this many times `warmup_s`, settled or not
# Sampling stops after this many times `time_cap_s`, with fewer than `min_samples` samples if
# need be (few_samples). Twice the cap: a full run's 1-thread MNIST train step (0.26 s on this
# project's 2-core VM, up to 1.8x that in the VM's slow phases) still fills its 10 blocks, which
# one cap (3 s) would not always allow.
HARD_CAP_FACTOR = 2
# A block on a GPU lasts at least this long: the two synchronisations around it (tens of
# microseconds) then cost under 1% of it. On the CPU the clock costs nothing next to a step.
MIN_BLOCK_S = {"cpu": 0.0, "cuda": 0.005}


def make_clock(devices: list[torch.device]) -> Callable[[], float]:
    """A timer function that first waits for every CUDA device in `devices`.

    CUDA kernels run asynchronously; a clock read without synchronising would time the launch,
    not the work. torch.utils.benchmark.Timer's default clock synchronises only the current
    device (torch.accelerator.synchronize()), which under-times DataParallel's replicas on the
    other GPUs.
    """
    cuda_indices = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    if not cuda_indices:
        return timeit.default_timer

    def synchronized_clock() -> float:
        for index in cuda_indices:
            torch.cuda.synchronize(index)
        return timeit.default_timer()

    return synchronized_clock


@dataclass(frozen=True)
class Settling:
    """The warm-up blocks timed until the step time settled (module docstring)."""

    seconds: float
    blocks: int
    settled: bool  # False: the warm-up cap ended it while blocks were still getting faster


@dataclass(frozen=True)
class Sampling:
    """What the loop measured: raw samples (seconds per iteration, one per block) and how they
    were taken. What it was asked to do is the caller's (TimingOptions)."""

    samples: tuple[float, ...]
    steps_per_sample: int
    warmup_steps: int
    stop_reason: str  # "precision", "time_cap" or "min_samples" (no precision target)
    step_estimate_s: float  # the probe's, agreed between DDP ranks
    settling: Settling | None = None  # None: no settling asked for (warmup_s = 0)


def warm_up(step: Callable[[], None], steps: int, clock: Callable[[], float]) -> None:
    """Run `steps` untimed steps: lazy initialisation, optimizer state, cuDNN autotuning, caches."""
    for _ in range(steps):
        step()
    clock()


def settle(timer: timeit.Timer, number: int, clock: Callable[[], float], warmup_s: float,
           agree: Callable[[float], float]) -> Settling:
    """Time warm-up blocks of `number` steps until the step time settles (module docstring);
    DDP ranks decide together after every block, as they do when sampling."""
    started, blocks = clock(), []
    while True:
        blocks.append(timed_block(timer, number))
        elapsed = clock() - started
        improving = len(blocks) < 2 or blocks[-1] < (1 - SETTLED_FRACTION) * min(blocks[:-1])
        done = (elapsed >= warmup_s and not improving) or elapsed >= WARMUP_CAP_FACTOR * warmup_s
        if agree(0.0 if done else 1.0) == 0.0:
            return Settling(elapsed, len(blocks), not improving)


def measure(step: Callable[[], None], *, threads: int, devices: list[torch.device],
            min_run_time: float, warmup_steps: int, min_samples: int, time_cap_s: float,
            warmup_s: float = 0.0, target_precision: float | None = None,
            agree: Callable[[float], float] | None = None,
            between_blocks: Callable[[], None] | None = None, number: int | None = None) -> Sampling:
    """Time `step` (one iteration) after `warmup_steps` untimed ones and `warmup_s` seconds of
    settling (see the module docstring). `number`: steps a block, instead of sizing blocks to the step.

    `between_blocks` runs after each block, outside the timed part (the contention watch).
    """
    clock = make_clock(devices)
    timer = timeit.Timer(stmt=step, timer=clock)
    agree = agree or (lambda value: value)
    # One thread count for warm-up, probe and blocks alike (timeit.Timer sets none).
    with torch_threads(threads):
        warm_up(step, warmup_steps, clock)
        step_estimate = agree(timed_block(timer, PROBE_STEPS))
        number = number or block_size(step_estimate, min_run_time,
                                      max(MIN_BLOCK_S.get(d.type, 0.0) for d in devices))
        settling = settle(timer, number, clock, warmup_s, agree) if warmup_s > 0 else None
        samples: list[float] = []
        started = clock()
        while True:
            samples.append(timed_block(timer, number))
            if between_blocks is not None:
                between_blocks()
            reason = _stop_reason(samples, clock() - started, min_run_time, min_samples,
                                  time_cap_s, target_precision)
            # Every rank stops after the same block: the slowest to be satisfied decides.
            if agree(0.0 if reason else 1.0) == 0.0:
                break
    return Sampling(tuple(samples), number, warmup_steps, reason or "time_cap", step_estimate, settling)


def _stop_reason(samples, elapsed, min_run_time, min_samples, time_cap_s, target) -> str | None:
    if len(samples) >= min_samples and elapsed >= min_run_time:
        if target is None:
            return "min_samples"
        interval = median_interval(samples)
        if interval and (interval[1] - interval[0]) / 2 <= target * statistics.median(samples):
            return "precision"
        return "time_cap" if elapsed >= time_cap_s else None
    # Short of the minimum count only the hard cap stops sampling: a step too slow (few_samples).
    return "time_cap" if elapsed >= HARD_CAP_FACTOR * time_cap_s else None


def timed_block(timer: timeit.Timer, number: int) -> float:
    """Seconds per step over one block of `number` steps: one `timer.timeit(number)`.

    Not torch.utils.benchmark.Timer.timeit, which first runs max(number // 100, 2) untimed
    steps on every call: for a one-step block of a slow DDP step that triples the run's length,
    and the step has warmed up already. Its loop inside is this one, timeit.Timer's.
    """
    # No real step takes under a nanosecond; a coarse clock must not make a sample 0.
    return max(timer.timeit(number), 1e-9) / number


def block_size(step_s: float, min_run_time: float, min_block_s: float = 0.0) -> int:
    """Steps per block: about TARGET_SAMPLES blocks in `min_run_time`, each at least `min_block_s`."""
    step_s = max(step_s, 1e-9)
    number = max(1, math.floor(min_run_time / (TARGET_SAMPLES * step_s)))
    return max(number, math.ceil(min_block_s / step_s))
