"""The result of one check: shared by pytest, the check_function report and `torchsuite run`.

Checks return a CheckResult instead of raising, so one code path serves an assertion in a
test, a row in a report table and a verdict record in a results file.

Verdicts: "pass"; "fail"; "skip", a check that does not apply (what the case declares, absent
hardware); "not_compiled", a check of compiled code whose backend received no graph, so that
it compared eager with eager and found nothing either way. `passed` means "nothing failed and
nothing was left unchecked that applies": true for pass and skip, false for fail and
not_compiled. A not_compiled check is not a failure (`failures()` leaves it out, the tables
print it as its own verdict), but it is never a pass: a model dynamo ran eagerly must not be
reported equivalent, nor turn a test green. A case that is known not to compile declares it
(Expect NOT_COMPILED, suite/cases/expect.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from suite.cases.expect import FAILS, NOT_COMPILED, Expect
from suite.errors import one_line
from suite.threads import torch_threads

CHECK_VERDICTS = ("pass", "fail", "skip", NOT_COMPILED)


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: str  # one of CHECK_VERDICTS
    detail: str = ""
    seconds: float = 0.0

    def __post_init__(self):
        if self.verdict not in CHECK_VERDICTS:
            raise ValueError(f"verdict must be one of {CHECK_VERDICTS}, not {self.verdict!r}")

    @property
    def passed(self) -> bool:
        """False for a failure and for not_compiled (nothing compiled, so nothing was checked);
        a skip, a check that does not apply, is not a failure."""
        return self.verdict in ("pass", "skip")

    def __str__(self) -> str:
        return f"{self.name}: {self.verdict}" + (f" ({self.detail})" if self.detail else "")


class NamedChecks:
    """A report's rows (`self.checks`, each with .name and .passed), looked up by name."""

    checks: list

    def check(self, name: str):
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {', '.join(c.name for c in self.checks)}")

    def failures(self) -> list[str]:
        return [c.name for c in self.checks if c.verdict == "fail"]

    def not_compiled(self) -> list[str]:
        return [c.name for c in self.checks if c.verdict == NOT_COMPILED]


def run_check(name: str, body: Callable[[], tuple[str, str]]) -> CheckResult:
    """Time `body` (returning (verdict, detail)) on one thread; an exception it lets out is a
    failure, reported. One thread: the checks work on tiny tensors, where intra-op threads only
    add overhead, and on a busy machine far more (a 3 s gradcheck took 38 s with 2 threads)."""
    start = time.perf_counter()
    try:
        with torch_threads(1):
            verdict, detail = body()
    except Exception as error:  # a failing check is reported, never raised
        verdict, detail = "fail", f"raised {one_line(error)}"
    return CheckResult(name, verdict, detail, time.perf_counter() - start)


def meets(expected: Expect | None, failed: bool, cause: str | None = None, not_compiled: bool = False) -> bool:
    """Whether a check's outcome is what its case declares (None: the check must pass, which a
    check that compiled nothing did not).

    An expected failure must be a failure, and for the declared cause when one is declared; an
    expected not_compiled must have compiled nothing; an approximate check is reported, not
    judged; a check that does not apply was skipped."""
    if expected is None:
        return not failed and not not_compiled
    if expected.outcome == FAILS:
        return failed and (not expected.cause or cause == expected.cause)
    if expected.outcome == NOT_COMPILED:
        return not_compiled and not failed
    return True  # APPROXIMATE, NOT_APPLICABLE


def verdict_record(suite: str, case: str, check: str, *, device: str, passed: bool, detail: str,
                   seconds: float, **extra) -> dict:
    """A `torchsuite run` verdict record: passed means "as the case declares" (see `meets`)."""
    return {"kind": "conformance", "suite": suite, "case": case, "check": check, "device": device,
            "passed": passed, "detail": detail, "seconds": seconds, **extra}


def result_record(suite: str, case: str, result: CheckResult, device: str, expected: Expect | None = None) -> dict:
    """A CheckResult as a verdict record, judged against what its case declares."""
    detail = f"{result.verdict}: {result.detail}" if result.detail else result.verdict
    return verdict_record(suite, case, result.name, device=device,
                          passed=meets(expected, result.verdict == "fail", not_compiled=result.verdict == NOT_COMPILED),
                          detail=detail, seconds=result.seconds)
