"""The measurement loop: warm-up, then torch.utils.benchmark's Timer, with threads and CUDA sync.

Two ways to collect samples, both through `Timer`:

- one process (`cpu`, `cuda`, `dataparallel`): `Timer.blocked_autorange`, which picks a block
  size that makes the timer's own cost negligible and keeps one sample per block;
- DDP ranks: every rank must run the very same number of steps, or one rank waits forever in
  an all-reduce the others never start. `blocked_autorange` decides its step count from each
  rank's own clock, so ranks first agree on one per-step estimate (`agree`, the slowest rank's)
  and then each runs the same fixed plan of blocks of `number` steps (`timed_block`).
"""
from __future__ import annotations

import math
import os
import timeit
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.benchmark import Timer

# Fixed plans aim at this many samples; fewer than MIN_FIXED_BLOCKS make a poor IQR.
TARGET_SAMPLES = 10
MIN_FIXED_BLOCKS = 5
PROBE_STEPS = 3


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
    method: str
    extra: dict = field(default_factory=dict)


def warm_up(step: Callable[[], None], steps: int, clock: Callable[[], float]) -> None:
    """Run `steps` untimed steps: lazy initialisation, optimizer state, cuDNN autotuning, caches."""
    for _ in range(steps):
        step()
    clock()


def measure(step: Callable[[], None], *, threads: int, devices: list[torch.device],
            min_run_time: float, warmup_steps: int,
            agree: Callable[[float], float] | None = None) -> Sampling:
    """Time `step` (one iteration) after `warmup_steps` untimed ones.

    `agree`, for DDP ranks, maps this rank's per-step estimate to one value all ranks share;
    with it the fixed-plan method is used (see the module docstring).
    """
    clock = make_clock(devices)
    timer = Timer(stmt="step()", globals={"step": step}, num_threads=threads, timer=clock,
                  label="torchsuite step")
    with torch_threads(threads):
        warm_up(step, warmup_steps, clock)
    if agree is None:
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
        return Sampling(list(measurement.times), measurement.number_per_run, warmup_steps,
                        "blocked_autorange")
    with torch_threads(threads):
        step_estimate = agree(timed_block(timer, PROBE_STEPS))
        number, blocks = fixed_plan(step_estimate, min_run_time)
        samples = [timed_block(timer, number) for _ in range(blocks)]
    return Sampling(samples, number, warmup_steps, "fixed_blocks",
                    {"agreed_step_estimate_s": step_estimate})


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


def fixed_plan(step_s: float, min_run_time: float) -> tuple[int, int]:
    """(steps per block, blocks): about TARGET_SAMPLES blocks filling `min_run_time`."""
    number = max(1, math.floor(min_run_time / (TARGET_SAMPLES * step_s)))
    blocks = max(MIN_FIXED_BLOCKS, math.ceil(min_run_time / (number * step_s)))
    return number, blocks


def cuda_event_seconds(step: Callable[[], None], device: torch.device, steps: int) -> float:
    """GPU time per step between two CUDA events on `device`'s current stream.

    Beside the host clock's median this says whether the GPU or the host is the bottleneck:
    the two agree when the GPU is busy all along, and the events read lower when it idles.
    """
    with torch.cuda.device(device):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / steps
