"""The measurement loop: warm-up, then blocks of steps timed by torch.utils.benchmark's Timer.

One loop for every setup. A probe of a few steps estimates the step time; blocks are sized so
that about TARGET_SAMPLES of them fill `min_run_time` (and, on a GPU, so that each block is long
enough for the synchronisation at its ends to be negligible). Warm-up goes on, in blocks, until
the step time settles: at least `warmup_s` seconds, and until a block is no longer faster than
every block before it by more than SETTLED_FRACTION (a fixed count of warm-up steps left quick
figures 1.2-1.5x slow on this project's 2-core VM: allocator and thread-pool warm-up lasted
longer than two steps). Then blocks are timed until

- there are at least `min_samples` of them and `min_run_time` has passed, and
- when `target_precision` is set (full runs), the 95% interval of the median is within that
  fraction of it, or `time_cap_s` has passed (the way Phoronix's dynamic run count works).

Blocks are timed by Timer's own loop with a clock that synchronises every CUDA device used.
DDP ranks must all run the very same number of steps, or one rank waits forever in an
all-reduce the others never start: with `agree` (the slowest rank's value of a float), ranks
share one step estimate and one decision to stop after every block.
"""
from __future__ import annotations

import math
import os
import statistics
import timeit
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.benchmark import Timer

from suite.timing.stats import median_interval

TARGET_SAMPLES = 10
PROBE_STEPS = 3
SETTLED_FRACTION = 0.03
WARMUP_CAP_FACTOR = 4  # warm-up stops after this many times `warmup_s`, settled or not
# A block on a GPU lasts at least this long: the two synchronisations around it (tens of
# microseconds) then cost under 1% of it. On the CPU the clock costs nothing next to a step.
MIN_BLOCK_S = {"cpu": 0.0, "cuda": 0.005}


def all_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(count: int):
    """Run the block with torch's intra-op pool at `count` threads, then restore it.

    Timer sets the count only around its own loops; warm-up and FLOP counting must match it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_clock(devices: list[torch.device]) -> Callable[[], float]:
    """A timer function that first waits for every CUDA device in `devices`.

    CUDA kernels run asynchronously; a clock read without synchronising would time the launch,
    not the work. Timer's own default synchronises only the current device, which under-times
    DataParallel's replicas on the other GPUs.
    """
    cuda_indices = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    if not cuda_indices:
        return timeit.default_timer

    def synchronized_clock() -> float:
        for index in cuda_indices:
            torch.cuda.synchronize(index)
        return timeit.default_timer()

    return synchronized_clock


@dataclass
class Sampling:
    """Raw samples (seconds per iteration, one per block) and how they were taken."""

    samples: list[float]
    steps_per_sample: int
    warmup_steps: int
    stop_reason: str  # "precision", "time_cap" or "min_samples" (no precision target)
    extra: dict = field(default_factory=dict)


def warm_up(step: Callable[[], None], steps: int, clock: Callable[[], float]) -> None:
    """Run `steps` untimed steps: lazy initialisation, optimizer state, cuDNN autotuning, caches."""
    for _ in range(steps):
        step()
    clock()


def settle(timer: Timer, number: int, clock: Callable[[], float], warmup_s: float,
           agree: Callable[[float], float]) -> dict:
    """Time warm-up blocks of `number` steps until the step time settles (module docstring);
    DDP ranks decide together after every block, as they do when sampling."""
    started, blocks = clock(), []
    while True:
        blocks.append(timed_block(timer, number))
        elapsed = clock() - started
        improving = len(blocks) < 2 or blocks[-1] < (1 - SETTLED_FRACTION) * min(blocks[:-1])
        done = (elapsed >= warmup_s and not improving) or elapsed >= WARMUP_CAP_FACTOR * warmup_s
        if agree(0.0 if done else 1.0) == 0.0:
            return {"warmup_s": elapsed, "warmup_blocks": len(blocks), "settled": not improving}


def measure(step: Callable[[], None], *, threads: int, devices: list[torch.device],
            min_run_time: float, warmup_steps: int, min_samples: int, time_cap_s: float,
            warmup_s: float = 0.0, target_precision: float | None = None,
            agree: Callable[[float], float] | None = None,
            between_blocks: Callable[[], None] | None = None) -> Sampling:
    """Time `step` (one iteration) after `warmup_steps` untimed ones and `warmup_s` seconds of
    settling (see the module docstring).

    `between_blocks` runs after each block, outside the timed part (the contention watch).
    """
    clock = make_clock(devices)
    timer = Timer(stmt="step()", globals={"step": step}, num_threads=threads, timer=clock,
                  label="torchsuite step")
    agree = agree or (lambda value: value)
    with torch_threads(threads):
        warm_up(step, warmup_steps, clock)
        step_estimate = agree(timed_block(timer, PROBE_STEPS))
        number = block_size(step_estimate, min_run_time, max(MIN_BLOCK_S.get(d.type, 0.0) for d in devices))
        warmup = settle(timer, number, clock, warmup_s, agree) if warmup_s > 0 else {}
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
    return Sampling(samples, number, warmup_steps, reason or "time_cap",
                    {"step_estimate_s": step_estimate, "time_cap_s": time_cap_s,
                     "target_precision": target_precision, "min_samples": min_samples, **warmup})


def _stop_reason(samples, elapsed, min_run_time, min_samples, time_cap_s, target) -> str | None:
    if len(samples) < min_samples or elapsed < min_run_time:
        return None
    if target is None:
        return "min_samples"
    interval = median_interval(samples)
    median = statistics.median(samples)
    if interval and (interval[1] - interval[0]) / 2 <= target * median:
        return "precision"
    return "time_cap" if elapsed >= time_cap_s else None


def timed_block(timer: Timer, number: int) -> float:
    """Seconds per step over one block of `number` steps, timed by `timer`'s own loop.

    `Timer.timeit(number)` first runs max(number // 100, 2) untimed steps, on every call: for
    a one-step block of a slow DDP step that triples the run's length. The rank has warmed up
    already, so each block goes straight to the loop `Timer.timeit` times (its `_timeit`, the
    timeit.Timer holding the compiled statement), with the caller setting the thread count.
    """
    loop = getattr(timer, "_timeit", None)
    if loop is None:  # a torch without the private loop: pay its warm-up steps
        return timer.timeit(number).median
    return loop(number) / number


def block_size(step_s: float, min_run_time: float, min_block_s: float = 0.0) -> int:
    """Steps per block: about TARGET_SAMPLES blocks in `min_run_time`, each at least `min_block_s`."""
    step_s = max(step_s, 1e-9)
    number = max(1, math.floor(min_run_time / (TARGET_SAMPLES * step_s)))
    return max(number, math.ceil(min_block_s / step_s))
