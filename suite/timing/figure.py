"""One figure that is right or flagged: measure, watch the machine, re-measure, flag what persists.

Around every measurement the core times a canary (suite.timing.canary) and watches the cores
(suite.timing.contention). A measurement during which other processes took the cores it needs,
or the machine's own speed moved, is repeated after waiting for quiet, up to `attempts` times;
what is still wrong after the last attempt keeps its samples and says so in `flags`:

    noisy        IQR 10% of the median or more: the samples disagree among themselves
    contended    other processes (or a hypervisor, or a CPU quota) took cores the timing needed
    drift        the canary ran more than 15% faster or slower after the figure than before it
    few_samples  fewer raw samples than the minimum (10 in full runs, 5 in quick runs): the hard
                 cap stopped sampling first, as it does a step too slow to fit the minimum count
                 of blocks in twice `time_cap_s` (suite.timing.measure)
    throttled    a CPU thermal-throttle count rose, or a GPU reported power or thermal limits
    quick        taken with the short --quick settings: a smoke-level figure
    one_process  measured in one process only: its interval cannot say what a rerun would give
                 (time_model's own records; a run's figures come from several, suite.timing.processes)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from suite.timing.canary import Canary, drifted
from suite.timing.contention import Load, is_contended, load_between, read_counters, wait_for_quiet
from suite.timing.machine_state import throttle_counters, throttled_between
from suite.timing.measure import Sampling, measure
from suite.timing.options import DDP_SETUPS, TimingOptions

FLAGS = ("noisy", "contended", "drift", "few_samples", "throttled", "above_peak", "quick", "one_process")


def above_peak(peak_fraction: float | None) -> bool:
    """A figure faster than the calibrated peak: that peak was never the hardware's limit (a
    matmul of one size, one dtype), so the fraction is flagged rather than printed as a fact."""
    return peak_fraction is not None and peak_fraction > 1.0


@dataclass(frozen=True)
class Trust:
    """What was seen of the machine around a measurement's last attempt: the judgements that
    become flags (contended, drift, throttled), and the evidence the record keeps."""

    contended: bool  # others took cores the timing needed (suite.timing.contention)
    drift: bool  # the canary moved by more than its threshold (suite.timing.canary)
    throttled: bool  # a throttle counter rose (suite.timing.machine_state)
    attempts: int  # measurements taken: a contended or drifting one is repeated
    canary_before_s: float
    canary_after_s: float
    load: Load  # others' use of this process's cores during the last attempt
    sample_others_cores: tuple[float | None, ...]  # the same, block by block


def measure_figure(step: Callable[[], None], *, options: TimingOptions, devices: list[torch.device],
                   agree: Callable[[float], float] | None = None) -> tuple[Sampling, Trust]:
    """(sampling, trust): the last attempt's samples, and what was seen of the machine around them.

    With `agree` (DDP ranks), every decision to re-measure is shared, so that all ranks run the
    same steps.
    """
    threads = options.threads
    ranks = options.world_size if options.setup in DDP_SETUPS else 1
    # Cores the whole figure keeps busy; the other ranks' share is load it expects to see. On a
    # GPU one host thread per process drives the device.
    per_rank = threads if devices[0].type == "cpu" else 1
    cores_needed, peers_cores = per_rank * ranks, per_rank * (ranks - 1)
    anywhere = (lambda bad: agree(1.0 if bad else 0.0) > 0) if agree else bool
    gpus = [d.index or 0 for d in devices if d.type == "cuda"]
    canary = Canary(devices[0], threads)
    for attempt in range(1, options.attempts + 1):
        if attempt > 1:
            wait_for_quiet(cores_needed, options.quiet_budget_s)
        canary_before, throttle_before = canary.time(), throttle_counters(gpus)
        per_sample, start = [], read_counters()
        last = [start]

        def watch() -> None:
            now = read_counters()
            per_sample.append(load_between(last[0], now).others_cores)
            last[0] = now

        sampling = measure(step, threads=threads, devices=devices, min_run_time=options.min_run_time,
                           warmup_steps=options.warmup_steps, warmup_s=options.warmup_s,
                           min_samples=options.min_samples, time_cap_s=options.time_cap_s,
                           target_precision=options.target_precision, agree=agree, between_blocks=watch,
                           number=options.steps_per_sample)
        load = load_between(start, last[0])
        canary_after = canary.time()
        # The other ranks use about what this one does: a full core each on a quiet machine, less
        # when others crowd them, and then only what they really used may be set against `others`.
        peers_used = min(peers_cores, (ranks - 1) * load.own_cores) if load.own_cores is not None else peers_cores
        contended = anywhere(is_contended(load, cores_needed, peers_used))
        drift = anywhere(drifted(canary_before, canary_after))
        if not (contended or drift):
            break
    trust = Trust(contended=contended, drift=drift,
                  throttled=anywhere(throttled_between(throttle_before, throttle_counters(gpus))),
                  attempts=attempt, canary_before_s=canary_before, canary_after_s=canary_after,
                  load=load, sample_others_cores=tuple(per_sample))
    return sampling, trust


def figure_flags(*, noisy: bool, sampling: Sampling, trust: Trust, options: TimingOptions,
                 peak_fraction: float | None = None) -> list[str]:
    """The flags of one process's figure, in FLAGS order (suite.timing.processes merges processes)."""
    present = {"noisy": noisy, "contended": trust.contended, "drift": trust.drift,
               "few_samples": len(sampling.samples) < options.min_samples, "throttled": trust.throttled,
               "above_peak": above_peak(peak_fraction), "quick": options.quick, "one_process": True}
    return [flag for flag in FLAGS if present[flag]]
