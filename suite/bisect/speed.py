"""Judging an item by its speed: an interleaved A/B against the good end, `torchsuite ab`'s rule.

Each item gets one session: it times the good end and the item in alternating fresh processes
(suite.ab), writes both sides as results files and takes `torchsuite compare`'s row of the
figure, judged on the session's rounds, each the two sides' processes back to back. The item is

    bad        when compare calls it `regressed` against the good end (slower beyond the
               threshold, p < 0.01);
    good       when it is no slower than the threshold and the upper end of its ratio's 90%
               interval (compare's; a one-sided 95% bound) is below the bad end's ratio: not
               merely no evidence of the regression, but evidence that it is absent;
    undecided  otherwise: slower beyond the threshold without significance, an interval that
               still reaches the bad end's ratio, or `untrusted` (too few rounds where a
               disturbance hit both sides alike).

While an item is undecided, the session goes on, two rounds at a time, until it decides or
`--max-time` is spent (suite.ab.time_until_decided); still undecided, the item is skipped. The
ends are judged first, the same way, except that the good end's verdict needs compare's
`unchanged` (its interval rules a change beyond the threshold out): without a regression from
good to bad there is nothing to find, and no culprit is named; undecided, bisect gives up and
says what would decide.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from suite import ab
from suite.bisect.search import BAD, GOOD, SKIP
from suite.errors import SuiteError
from suite.report import compare

UNDECIDED = "undecided"


@dataclass(frozen=True)
class Session:
    """What one A/B session (with the ones before it on the same item, pooled) measured."""

    name: str
    ratio: float | None  # None: the item timed nothing
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    p_slower: float | None
    compare_verdict: str
    compare_why: str
    processes: int  # the fewer of the two sides', pooled over the item's sessions
    seconds: float
    verdict: str  # GOOD, BAD or UNDECIDED by the rule above
    reason: str
    compare_file: str

    def to_dict(self) -> dict:
        return asdict(self)


def decide(row: compare.Row, threshold: float, bad_ratio: float | None) -> tuple[str, str]:
    """(GOOD | BAD | UNDECIDED, why) for compare's row of an item against the good end.
    bad_ratio: the bad end's ratio (None while the ends themselves are judged)."""
    if row.verdict == "regressed":
        return BAD, row.why
    if row.verdict == "untrusted":
        return UNDECIDED, row.why
    if bad_ratio is None:  # the ends: no regression only where compare rules one out
        return (GOOD, row.why) if row.verdict in ("unchanged", "improved") else (UNDECIDED, row.why)
    if row.ratio > 1 + threshold:
        return UNDECIDED, f"within noise: {row.ratio - 1:+.1%} but not significant (p = {_p(row)})"
    if row.ratio_ci_high is None or row.ratio_ci_high >= bad_ratio:
        return UNDECIDED, (f"within noise: its interval reaches {_high(row)}, the bad end's ratio is "
                           f"{bad_ratio:.3f}")
    return GOOD, f"{row.ratio - 1:+.1%}, its interval below {bad_ratio:.3f}"


def _p(row: compare.Row) -> str:
    return f"{row.p_slower:.2g}" if row.p_slower is not None else "n/a"


def _high(row: compare.Row) -> str:
    return f"{row.ratio_ci_high:.3f}" if row.ratio_ci_high is not None else "n/a"


class SpeedJudge:
    """A/B sessions of items against the good end (index 0) for one figure."""

    def __init__(self, builds, requests: list[dict], rounds: int, threshold: float, out_dir, say,
                 max_time_s: float = ab.DEFAULT_MAX_TIME_S):
        ab.check_session(rounds, max_time_s)
        if not threshold > 0:
            raise SuiteError(f"--threshold must be positive, got {threshold}")
        self.builds, self.requests, self.rounds, self.threshold = builds, requests, rounds, threshold
        self.out_dir, self.say, self.max_time_s = Path(out_dir), say, max_time_s
        self.bad_ratio: float | None = None
        self.sessions_run = 0
        self.processes_run = 0

    def measure(self, index: int, name: str) -> list[Session]:
        """One session of item `index` against the good end, going on until it decides or its time is up."""
        good, item = self.builds.interpreter(0), self.builds.interpreter(index)
        started = time.monotonic()

        def judged(collected: dict) -> tuple[bool, Session]:
            session = self._judge_session(name, collected, good, item, time.monotonic() - started)
            return session.verdict != UNDECIDED or session.ratio is None, session

        collected, session = ab.time_until_decided(good, item, self.requests, self.rounds, self.max_time_s,
                                                   judged, self.say)
        self.sessions_run += 1
        self.processes_run += 2 * collected["rounds"]
        if session.verdict == UNDECIDED:
            self.say(f"{name}: undecided after {collected['rounds']} rounds ({session.reason})")
        return [session]

    def _judge_session(self, name: str, collected: dict, good, item, seconds: float) -> Session:
        (figure,) = collected["base"]
        if not collected["base"][figure]:
            raise SuiteError(f"the good end ({good.label}) timed no {figure}; see the lines above")
        out = self.out_dir / name
        if not collected["new"][figure]:  # the item cannot be timed: its code is broken or absent
            return Session(name, None, None, None, None, "", "", 0, seconds, UNDECIDED,
                           "timed no figure: every process failed (see the lines above)", "")
        base_path, new_path = ab.write_sides(collected, {"base": good, "new": item}, out)
        header, rows = compare.compare(base_path, new_path, threshold=self.threshold)
        compare.write_outputs(out, header, rows)
        row = rows[0]  # one figure
        verdict, reason = decide(row, self.threshold, self.bad_ratio)
        processes = min(len(records) for records in (collected["base"][figure], collected["new"][figure]))
        return Session(name, row.ratio, row.ratio_ci_low, row.ratio_ci_high, row.p_slower, row.verdict, row.why,
                       processes, seconds, verdict, reason, str(out / "compare.json"))

    def ends(self) -> tuple[bool, list[Session]]:
        """(whether the bad end regressed against the good end, the sessions that said so)."""
        sessions = self.measure(len(self.builds.items) - 1, "ends")
        last = sessions[-1]
        if last.verdict == BAD:
            self.bad_ratio = last.ratio
        return last.verdict == BAD, sessions

    def judge(self, index: int, step: int) -> tuple[str, list[Session]]:
        sessions = self.measure(index, f"step{step}")
        verdict = sessions[-1].verdict
        return (SKIP if verdict == UNDECIDED else verdict), sessions
