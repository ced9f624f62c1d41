"""The one rule that turns seeded runs into a figure, and the one that compares steps across machines.

MLPerf Training's rule: of N runs, drop the fastest and the slowest and average the rest. A run
that did not converge counts as the slowest, so one such run is dropped (and reported); two
invalidate the figure. With fewer than 3 runs nothing can be dropped: every run must converge
and the figure is the plain mean. Steps to target are scored the same way, separately.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GROUP_KEY = ("model", "device", "dtype", "data")

# Steps to target of two machines given the same seeds, on the synthetic task, must agree within
# this fraction of the baseline's score, and never less than two evaluation intervals (steps are
# only known to the nearest interval). Measured on the 2-core machine (docs/convergence.md): the
# same seeds on one machine with 1 and 2 threads (the same numerics up to summation order) and
# float32 against bfloat16 autocast.
STEPS_TOLERANCE_FRACTION = 0.25
STEPS_TOLERANCE_INTERVALS = 2


@dataclass(frozen=True)
class Score:
    runs: int
    converged: int
    valid: bool
    time_to_target_s: float | None  # None when invalid
    steps_to_target: float | None
    dropped: int  # runs left out of the mean (fastest and slowest)
    note: str

    def describe(self) -> str:
        if not self.valid:
            return self.note
        return (f"{self.time_to_target_s:.3g} s, {self.steps_to_target:.4g} steps to target "
                f"({self.note})")


def _trimmed_mean(values: list[float]) -> tuple[float, int]:
    """Mean after dropping the smallest and largest (inf for runs that did not converge)."""
    ordered = sorted(values)
    kept = ordered[1:-1] if len(ordered) >= 3 else ordered
    return sum(kept) / len(kept), len(ordered) - len(kept)


def score(records: list[dict]) -> Score:
    """The score of one group of runs (one model, device, dtype and data)."""
    runs = len(records)
    converged = [r for r in records if r.get("converged")]
    failed = runs - len(converged)
    if runs == 0:
        return Score(0, 0, False, None, None, 0, "no runs")
    if failed >= 2 or (failed and runs < 3):
        why = f"invalid: {failed} of {runs} runs did not converge"
        return Score(runs, len(converged), False, None, None, 0,
                     why + (" (with fewer than 3 runs none may fail)" if runs < 3 and failed < 2 else ""))
    times = [r["time_to_target_s"] for r in converged] + [math.inf] * failed
    steps = [r["steps_to_target"] for r in converged] + [math.inf] * failed
    mean_time, dropped = _trimmed_mean(times)
    mean_steps, _ = _trimmed_mean(steps)
    note = (f"mean of {runs - dropped} of {runs} runs, fastest and slowest dropped" if dropped
            else f"mean of {runs} runs; fewer than 3, none dropped")
    if failed:
        note += f"; 1 run did not converge (dropped as the slowest)"
    return Score(runs, len(converged), True, mean_time, mean_steps, dropped, note)


def group(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in GROUP_KEY), []).append(record)
    return groups


def steps_tolerance(baseline_steps: float, eval_every) -> float:
    interval = eval_every if isinstance(eval_every, (int, float)) else 0
    return max(STEPS_TOLERANCE_FRACTION * baseline_steps, STEPS_TOLERANCE_INTERVALS * interval)


def steps_disagree(steps: float | None, baseline_steps: float | None, eval_every) -> bool:
    """Whether a machine's steps-to-target score is too far from the baseline's to be the same numerics."""
    if steps is None or baseline_steps is None:
        return False
    return abs(steps - baseline_steps) > steps_tolerance(baseline_steps, eval_every)
