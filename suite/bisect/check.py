"""Judging an item by a check: run once in a fresh process at the item, passed or failed.

The check is a user's `module:function` (it passes when it returns without raising, and what it
returns is not False and has no false `.passed`) or a registered SUITE/CASE[/CHECK] as
`torchsuite run` records it (suite.bisect.check_worker). An item where the check passes is good,
one where it fails is bad. One where it could not run is not judged: a process that died, hung
past CHECK_TIMEOUT_S or answered nothing is run again, then skipped; a check absent at the item
(no such module, function or case there) is skipped at once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from suite.bisect.search import BAD, GOOD, SKIP
from suite.errors import SuiteError

CHECK_TIMEOUT_S = 900.0
RUNS_PER_ITEM = 2  # the first, and one more when the first gave no answer
BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
WORKER = Path(__file__).resolve().with_name("check_worker.py")
PASS, FAIL, ABSENT, NO_ANSWER = "pass", "fail", "absent", "no answer"


@dataclass(frozen=True)
class CheckRun:
    name: str
    outcome: str  # PASS, FAIL, ABSENT or NO_ANSWER
    detail: str
    seconds: float
    verdict: str  # GOOD, BAD or SKIP

    def to_dict(self) -> dict:
        return asdict(self)


def run_check(interpreter, selector: str, device: str, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[str, str]:
    """(outcome, detail) of the check in a fresh process of `interpreter`, with its code first on the path."""
    env = {**os.environ, **interpreter.env}
    if interpreter.cwd:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [interpreter.cwd, env.get("PYTHONPATH")]))
    request = json.dumps({"check": selector, "device": device})
    try:
        proc = subprocess.Popen([interpreter.python, "-c", BOOT, str(WORKER), request], cwd=interpreter.cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as err:
        return NO_ANSWER, f"cannot start {interpreter.python}: {err}"
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return NO_ANSWER, f"no answer after {timeout_s:.0f} s: it hung"
    except BaseException:
        _kill(proc)
        raise
    lines = out.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        return answer["outcome"], answer["detail"]
    except (IndexError, ValueError, KeyError, TypeError):
        last = (err.strip().splitlines() or ["nothing on stderr"])[-1][:300]
        return NO_ANSWER, f"exited with status {proc.returncode} without an answer: {last}"


def _kill(proc: subprocess.Popen) -> None:
    """The check's whole session: its process and whatever it started (DDP ranks)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


class CheckJudge:
    """Runs of the check at items; the ends must pass (good) and fail (bad)."""

    def __init__(self, builds, selector: str, device: str, say, timeout_s: float = CHECK_TIMEOUT_S):
        self.builds, self.selector, self.device, self.say, self.timeout_s = builds, selector, device, say, timeout_s
        self.runs = 0

    def measure(self, index: int, name: str) -> list[CheckRun]:
        runs = []
        for attempt in range(1, RUNS_PER_ITEM + 1):
            started = time.monotonic()
            outcome, detail = run_check(self.builds.interpreter(index), self.selector, self.device, self.timeout_s)
            self.runs += 1
            verdict = {PASS: GOOD, FAIL: BAD}.get(outcome, SKIP)
            runs.append(CheckRun(name if attempt == 1 else f"{name}-again", outcome, detail,
                                 time.monotonic() - started, verdict))
            if outcome != NO_ANSWER:
                break
            self.say(f"{name}: {detail}; running it again")
        return runs

    def ends(self) -> tuple[bool, list[CheckRun]]:
        """(whether the check passes at the good end and fails at the bad one, the runs). A check
        absent at either end is bad input."""
        runs = []
        for index, name, wanted in ((0, "good end", PASS), (len(self.builds.items) - 1, "bad end", FAIL)):
            runs += self.measure(index, name)
            outcome, detail = runs[-1].outcome, runs[-1].detail
            if outcome == ABSENT:
                raise SuiteError(f"--check {self.selector}: {detail} at the {name} ({self.builds.items[index].label})")
            if outcome != wanted:
                return False, runs
        return True, runs

    def judge(self, index: int, step: int) -> tuple[str, list[CheckRun]]:
        runs = self.measure(index, f"step{step}")
        return runs[-1].verdict, runs
