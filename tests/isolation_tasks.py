"""Tasks for tests/test_isolation.py's worker processes (suite.isolation): each announces its
cases, and the case named by `bad` does what a broken kernel does (broken_kernels.misbehave). No
torch: a worker starts in a fraction of a second."""
from __future__ import annotations

import os
import sys

from broken_kernels import misbehave

from suite.errors import SuiteError
from suite.isolation import case, where


def cases(names: list[str], bad: str = "", how: str = "segv"):
    """One record a name; the one called `bad` misbehaves `how` on its second sample."""
    for name in names:
        if not case(name, {"kind": "conformance", "case": name, "check": "c"}, budget_s=30):
            continue
        for sample in range(3):
            where(sample=f"sample {sample}")
            if name == bad and sample == 1:
                misbehave(how, "case")
        yield {"kind": "conformance", "case": name, "check": "c", "passed": True, "pid": os.getpid()}


def no_cases(how: str = "segv"):
    """A task that announces no case: it is its own case."""
    yield {"kind": "conformance", "case": "first", "check": "c", "passed": True}
    misbehave(how, "case")


def bad_input():
    raise SuiteError("unknown thing 'x'; valid: a, b")
    yield  # a generator, as tasks are


def set_up_fails():
    raise ValueError("the task's set-up broke")
    yield


def pid():
    return [{"pid": os.getpid(), "argv": sys.argv}]
