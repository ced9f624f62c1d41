"""Tasks for tests/test_isolation.py's worker processes (suite.isolation): each announces its
cases, and the case named by `bad` does what a broken kernel does (broken_kernels.misbehave). No
torch: a worker starts in a fraction of a second."""
from __future__ import annotations

import os
import sys
import time

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


def meet(name: str, other: str, directory: str, linger_s: float = 0.0, wait_s: float = 60.0):
    """Leave a mark named `name` in `directory` and wait for `other`'s: a record, `met` when the
    other task ran at the same time (both meet), not when they ran one after the other; then, with
    `linger_s`, a second one that long after."""
    mine, theirs = os.path.join(directory, name), os.path.join(directory, other)
    open(mine, "w").close()
    deadline = time.monotonic() + wait_s
    while not os.path.exists(theirs) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield {"kind": "conformance", "case": name, "check": "met", "passed": os.path.exists(theirs), "pid": os.getpid()}
    if linger_s:
        time.sleep(linger_s)
        yield {"kind": "conformance", "case": name, "check": "lingered", "passed": True}
