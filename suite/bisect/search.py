"""The bisection: the first bad item of an ordered list whose first item is good and last is bad.

As `git bisect`: each step judges the untested item nearest the middle of what is still open;
an item that cannot be judged is skipped (`git bisect skip`) and its neighbour nearest the
middle is taken instead. When every item between the last good and the first bad one was
skipped, the answer is that range, not a guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GOOD, BAD, SKIP = "good", "bad", "skip"


@dataclass(frozen=True)
class Outcome:
    first_bad: int | None  # the index of the first bad item, None when the range holds several
    candidates: tuple[int, ...]  # the items that may be the first bad one: (first_bad,) when found
    skipped: tuple[int, ...]  # items that could not be judged

    @property
    def found(self) -> bool:
        return self.first_bad is not None


def next_midpoint(good: int, bad: int, skipped: set[int]) -> int | None:
    """The unjudged item nearest the middle of (good, bad), the earlier of two as near; None
    when every item between them was skipped (or there is none)."""
    open_items = [i for i in range(good + 1, bad) if i not in skipped]
    if not open_items:
        return None
    middle = (good + bad) / 2
    return min(open_items, key=lambda i: (abs(i - middle), i))


def bisect(count: int, judge: Callable[[int], str]) -> Outcome:
    """Bisect items 0..count-1, 0 known good and count-1 known bad; judge(i) returns GOOD, BAD or SKIP."""
    if count < 2:
        raise ValueError(f"bisect needs a good and a bad item, got {count} items")
    good, bad, skipped = 0, count - 1, set()
    while (middle := next_midpoint(good, bad, skipped)) is not None:
        verdict = judge(middle)
        if verdict == GOOD:
            good = middle
        elif verdict == BAD:
            bad = middle
        elif verdict == SKIP:
            skipped.add(middle)
        else:
            raise ValueError(f"a judge returns {GOOD}, {BAD} or {SKIP}, not {verdict!r}")
    candidates = tuple(range(good + 1, bad + 1))  # every one but `bad` was skipped
    return Outcome(bad if len(candidates) == 1 else None, candidates,
                   tuple(sorted(i for i in skipped if good < i < bad)))
