"""Progress of a run on stderr: a redrawn bar on a terminal, plain lines in logs and pipes.

The time left is estimated per kind of step (conformance source, timing), since one kind can
take ten times as long as another. With the plan's estimates, a kind's steps still to run count
their estimates scaled by how its finished steps compared with theirs (the machine's speed, as
that kind sees it), and steps that share lanes (conformance sources two at a time) count their
share. Without estimates, a kind's steps count the mean duration of its finished ones.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    BAR_WIDTH = 24

    def __init__(self, step_kinds: list[str], stream=None, clock=time.monotonic,
                 estimates: list[float] | None = None, lanes: list[int] | None = None):
        """`estimates`: the plan's seconds for each step; `lanes`: how many lanes share each
        step's group (1 for a step that runs alone)."""
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.kinds = list(step_kinds)
        self.estimates = list(estimates) if estimates is not None else None
        self.lanes = list(lanes) if lanes is not None else [1] * len(self.kinds)
        self.unfinished = set(range(len(self.kinds)))
        self.total = len(step_kinds)
        self.done = 0
        self.durations: dict[str, list[tuple[int, float]]] = defaultdict(list)  # kind: (step, seconds)
        self.started_at = clock()
        self._current: tuple[str, str, float, int | None] | None = None

    def estimate_left(self) -> float | None:
        finished = [d for ds in self.durations.values() for _, d in ds]
        if not finished and not self.estimates:
            return None
        overall = sum(finished) / len(finished) if finished else 0.0
        left = 0.0
        for kind in dict.fromkeys(self.kinds):
            remaining = [i for i in self.unfinished if self.kinds[i] == kind]
            done = self.durations.get(kind, [])
            if self.estimates:
                pairs = [(self.estimates[i], d) for i, d in done if i is not None]  # (planned, taken)
                planned = sum(e for e, _ in pairs)
                speed = sum(d for _, d in pairs) / planned if planned > 0 else 1.0
                left += speed * sum(self.estimates[i] / self.lanes[i] for i in remaining)
            else:
                left += len(remaining) * (sum(d for _, d in done) / len(done) if done else overall)
        if self._current:  # the running step is partly done
            left = max(0.0, left - (self.clock() - self._current[2]))
        return left

    def start(self, kind: str, label: str, index: int | None = None) -> None:
        """Step `index` of the plan (default: the first of its kind not yet finished) begins."""
        self._current = (kind, label, self.clock(), index)
        self._draw(label)

    def finish(self) -> None:
        if self._current is None:
            return
        kind, _, began, index = self._current
        self._count_done(kind, self.clock() - began, index)
        self._current = None

    def finish_elsewhere(self, kind: str, label: str, seconds: float, index: int | None = None) -> None:
        """A step that ran beside the current one (on a second worker): counted, and said in a line."""
        self._count_done(kind, seconds, index)
        self.note(f"{label}: done beside it, on a second worker, in {seconds:.1f} s")

    def _count_done(self, kind: str, seconds: float, index: int | None) -> None:
        if index is None:
            index = min((i for i in self.unfinished if self.kinds[i] == kind), default=None)
        self.unfinished.discard(index)
        self.durations[kind].append((index, seconds))
        self.done += 1

    def note(self, message: str) -> None:
        """A line that stays (an error, the results path), printed above the bar."""
        if self.is_tty:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        if self.is_tty and self._current:
            self._draw(self._current[1])
        self.stream.flush()

    def close(self, message: str) -> None:
        if self.is_tty:
            self.stream.write("\r\033[K")
        elapsed = format_duration(self.clock() - self.started_at)
        self.stream.write(f"{message} ({self.done}/{self.total} steps in {elapsed})\n")
        self.stream.flush()

    def _draw(self, label: str) -> None:
        left = f"about {format_duration(self.estimate_left())} left"
        count = f"{self.done + 1}/{self.total}"
        if self.is_tty:
            filled = int(self.BAR_WIDTH * self.done / max(self.total, 1))
            bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
            self.stream.write(f"\r\033[K[{bar}] {count} {label} ({left})")
        else:
            self.stream.write(f"[{count}] {label} ({left})\n")
        self.stream.flush()
