"""Progress of a run on stderr: a redrawn bar on a terminal, plain lines in logs and pipes.

The time left is estimated per kind of step (conformance source, timing): the mean duration
of the finished steps of that kind times the steps of that kind still to run, since one kind
can take ten times as long as the other. A kind with no finished step yet counts the plan's
own estimates for its steps, when the plan gave them.
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
                 estimates: list[float] | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.remaining = defaultdict(int)
        self.planned = defaultdict(float)  # the plan's seconds for each kind's steps still to run
        self.estimates = list(estimates) if estimates is not None else None
        for index, kind in enumerate(step_kinds):
            self.remaining[kind] += 1
            self.planned[kind] += self.estimates[index] if self.estimates else 0.0
        self.total = len(step_kinds)
        self.done = 0
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.started_at = clock()
        self._current: tuple[str, str, float] | None = None

    def estimate_left(self) -> float | None:
        finished = [d for ds in self.durations.values() for d in ds]
        if not finished and not self.estimates:
            return None
        overall = sum(finished) / len(finished) if finished else 0.0
        left = 0.0
        for kind, count in self.remaining.items():
            ds = self.durations.get(kind)
            left += count * (sum(ds) / len(ds)) if ds else self.planned[kind] if self.estimates else count * overall
        if self._current:  # the running step is partly done
            left = max(0.0, left - (self.clock() - self._current[2]))
        return left

    def start(self, kind: str, label: str) -> None:
        self._current = (kind, label, self.clock())
        self._draw(label)

    def finish(self) -> None:
        if self._current is None:
            return
        kind, _, began = self._current
        self._count_done(kind, self.clock() - began)
        self._current = None

    def finish_elsewhere(self, kind: str, label: str, seconds: float) -> None:
        """A step that ran beside the current one (on a second worker): counted, and said in a line."""
        self._count_done(kind, seconds)
        self.note(f"{label}: done beside it, on a second worker, in {seconds:.1f} s")

    def _count_done(self, kind: str, seconds: float) -> None:
        self.durations[kind].append(seconds)
        self.remaining[kind] -= 1
        if self.estimates and self.done < len(self.estimates):  # steps finish about in plan order
            self.planned[kind] -= self.estimates[self.done]
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
