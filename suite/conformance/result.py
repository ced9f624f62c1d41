"""The result of one check: shared by pytest, the check_function report and `torchsuite run`.

Checks return a CheckResult instead of raising, so one code path serves an assertion in a
test, a row in a report table and a verdict record in a results file.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from suite.errors import one_line

VERDICTS = ("pass", "fail", "skip")


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: str  # one of VERDICTS
    detail: str = ""
    seconds: float = 0.0

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    @property
    def passed(self) -> bool:
        """False only for a failure: a skip (a check that does not apply) is not a failure."""
        return self.verdict != "fail"

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
        return [c.name for c in self.checks if not c.passed]


@contextmanager
def one_thread():
    """The checks work on tiny tensors, where intra-op threads only add overhead; on a shared
    machine whose cores are busy they cost far more (a 3 s gradcheck took 38 s with 2 threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_check(name: str, body: Callable[[], tuple[str, str]]) -> CheckResult:
    """Time `body` (returning (verdict, detail)) on one thread; an exception it lets out is a
    failure, reported."""
    start = time.perf_counter()
    try:
        with one_thread():
            verdict, detail = body()
    except Exception as error:  # a failing check is reported, never raised
        verdict, detail = "fail", f"raised {one_line(error)}"
    return CheckResult(name, verdict, detail, time.perf_counter() - start)


def verdict_record(suite: str, case: str, result: CheckResult, device: str, passed: bool | None = None) -> dict:
    """A CheckResult as a `torchsuite run` verdict record; `passed` defaults to "did not fail"."""
    return {"kind": "conformance", "suite": suite, "case": case, "check": result.name, "device": device,
            "passed": result.passed if passed is None else passed,
            "detail": f"{result.verdict}: {result.detail}" if result.detail else result.verdict,
            "seconds": result.seconds}
