"""One worker boundary: what runs kernels runs in a worker process, so that a case that crashes,
aborts or hangs is a verdict about that case and the run goes on from the next one.

    worker = IsolatedWorker()
    for record in worker.run("suite.conformance.ops.verdicts:verdicts", "cpu", True):
        ...
    worker.close()

The worker (`python -m suite.isolation`) is a fresh interpreter, never a fork of a parent that has
run kernels. It takes one task at a time: a function named "module:qualname", called with JSON
arguments, whose records it sends back as they come; it lives on for the next task, so a run pays
one interpreter for many cases. A task announces each case before running it, with `case()`: its
key, the record it becomes should it never finish, and its budget; `where()` adds to that record
as the case goes (the sample being run). Then:

- the worker dies (a signal, abort(), an exit inside a kernel, the kernel's out-of-memory
  killer): the case's record gets outcome "crash", naming the signal or exit status, with the
  last lines of the worker's stderr; a fresh worker runs the task again, skipping every case
  already started;
- the case runs past its budget: the worker is killed with its process group (its ranks too),
  outcome "timeout", and a fresh worker goes on the same way;
- the task lets an exception out during a case: outcome "crash" (what it raised), or
  "out_of_memory" for torch.OutOfMemoryError, after which the worker empties its allocator's
  cache; the same worker goes on from the next case.

A task that announces no case is one case: when it dies, or dies again before announcing a new
case, WorkerCrash is raised for the caller to record; an exception outside any case is
TaskError. Nothing is ever unpickled: the channel is JSON lines.
"""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Iterable, Iterator

from suite.errors import SuiteError, one_line

CRASH, TIMEOUT, OUT_OF_MEMORY = "crash", "timeout", "out_of_memory"
LOST = (CRASH, TIMEOUT, OUT_OF_MEMORY)  # the outcomes of a case that did not finish
CASE_BUDGET_S = 300.0  # a case that announces no budget of its own
TASK_BUDGET_S = 3600.0  # a task's time outside its announced cases (one that announces none)
STDERR_TAIL_LINES, STDERR_TAIL_CHARS = 12, 2000
# Modules every worker process (these and the timing processes) imports first, comma-separated:
# an out-of-tree backend's package, or a test's planted kernel (tests/broken_kernels.py).
IMPORT_ENV = "TORCHSUITE_IMPORT"


class WorkerCrash(SuiteError):
    """The worker died or hung outside any case it announced: the task as a whole is the case."""

    def __init__(self, outcome: str, detail: str, stderr_tail: str = ""):
        super().__init__(detail)
        self.outcome, self.detail, self.stderr_tail = outcome, detail, stderr_tail


class TaskError(SuiteError):
    """The task raised outside any case (its set-up): the worker is fine, the task is not."""

    def __init__(self, detail: str, traceback_text: str = "", user_error: bool = False):
        super().__init__(detail)
        self.traceback, self.user_error = traceback_text, user_error


def import_user_modules() -> None:
    """Import the modules TORCHSUITE_IMPORT names (an out-of-tree device's package, a plant)."""
    for name in filter(None, (n.strip() for n in os.environ.get(IMPORT_ENV, "").split(","))):
        importlib.import_module(name)


def exit_description(returncode: int) -> str:
    """"SIGSEGV (signal 11)", "SIGABRT (signal 6)", or "exit status 3"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"{name} (signal {-returncode})"
    return f"exit status {returncode}"


def _child_path() -> str:
    """The parent's import path beyond the interpreter's own (a test's directory, the code under
    test), so that the worker resolves the same task names."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    extra = [p for p in sys.path if p and os.path.isdir(p)
             and not any(os.path.realpath(p).startswith(prefix) for prefix in prefixes)]
    return os.pathsep.join(dict.fromkeys([*extra, *filter(None, [os.environ.get("PYTHONPATH")])]))


class IsolatedWorker:
    """A worker process for tasks, started at the first task and after every crash or timeout.

    `case_budget_s` overrides every case's own budget (`torchsuite run --case-timeout`)."""

    def __init__(self, case_budget_s: float | None = None):
        self.case_budget_s = case_budget_s
        self.proc: subprocess.Popen | None = None
        self.stderr = None
        self.started = 0  # processes started: the first, and one after each crash
        self._buffer = b""

    # the process
    def _start(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": _child_path()}
        # Its own process group: killed whole with what it started (a pool's ranks), and out of the
        # terminal's way: Ctrl-C is the parent's to handle.
        self.proc = subprocess.Popen([sys.executable, "-m", "suite.isolation"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env, process_group=0)
        self.started += 1
        self._buffer = b""
        atexit.register(self.close)

    @property
    def running(self) -> bool:
        return self.proc is not None

    def call(self, task: str, *args) -> list[dict]:
        """Every record of `task`, at once."""
        return list(self.run(task, *args))

    def close(self) -> None:
        """Stop the worker and everything it started (its process group)."""
        atexit.unregister(self.close)
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()
            self.proc = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def stderr_tail(self) -> str:
        """The worker's last lines of stderr, trimmed."""
        if self.stderr is None:
            return ""
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 64 * 1024))
        return stderr_tail(self.stderr.read().decode("utf-8", "replace"))

    # the channel
    def _send(self, message: dict) -> None:
        with contextlib.suppress(OSError):  # it died: the next read says how
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()

    def _receive(self, budget_s: float) -> dict | None:
        """The worker's next message, or None when it died or ran past `budget_s`
        (self.proc.returncode tells which: None for a hang)."""
        deadline = time.monotonic() + budget_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    self.proc.wait()
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _lost(self, budget_s: float) -> tuple[str, str, str]:
        """(outcome, detail, stderr tail) of a worker that died or hung; the worker is gone after."""
        tail = self.stderr_tail()
        if self.proc.returncode is None:  # hung: stop it, and its ranks
            outcome, detail = TIMEOUT, f"no answer within its budget of {budget_s:g} s; the worker was killed"
        else:
            outcome, detail = CRASH, f"the worker died of {exit_description(self.proc.returncode)}"
        self.close()
        return outcome, detail, tail

    # tasks
    def run(self, task: str, *args) -> Iterator[dict]:
        """The records of `task` ("module:qualname") called with `args` in the worker; a case
        that crashes, hangs or raises becomes its record with that outcome (see the module's doc)."""
        try:
            yield from self._run(task, list(args))
        except (WorkerCrash, TaskError):
            raise  # the worker is gone, or waits for the next task
        except BaseException:  # Ctrl-C, or the caller stopped reading mid-task
            self.close()
            raise

    def _run(self, task: str, args: list) -> Iterator[dict]:
        skip: list[str] = []
        while True:
            if self.proc is None:
                self._start()
            self._send({"task": task, "args": args, "skip": skip})
            current = None  # the case running: its record should it not finish, and its budget
            while True:
                budget = current["budget_s"] if current else TASK_BUDGET_S
                message = self._receive(budget)
                if message is None:
                    outcome, detail, tail = self._lost(budget)
                    if current is None:  # nothing announced since this worker took the task
                        raise WorkerCrash(outcome, detail, tail)
                    yield self._case_record(current, outcome, detail, tail)
                    break  # a fresh worker goes on after the cases already started
                if "case" in message:
                    skip.append(message["case"])
                    current = {"record": message.get("record") or {},
                               "budget_s": self.case_budget_s or message.get("budget_s") or CASE_BUDGET_S}
                elif "where" in message and current is not None:
                    current["record"].update(message["where"])
                elif "record" in message:
                    yield message["record"]
                elif "user_error" in message:
                    raise TaskError(message["user_error"], user_error=True)
                elif "raised" in message:
                    if current is None:
                        raise TaskError(message["raised"], message.get("traceback", ""))
                    yield self._case_record(current, message.get("outcome", CRASH), f"raised {message['raised']}",
                                            message.get("traceback", ""), from_stderr=False)
                    break  # the same worker goes on after the cases already started
                elif message.get("end"):
                    return

    @staticmethod
    def _case_record(case: dict, outcome: str, detail: str, tail: str, from_stderr: bool = True) -> dict:
        """The case's record, lost: `tail` is the dead worker's stderr, or what the case raised."""
        said = stderr_summary(tail) if from_stderr else ""
        return {**case["record"], "passed": False, "outcome": outcome,
                "detail": f"{outcome.replace('_', ' ')}: {detail}" + (f"; stderr: {said}" if said else ""),
                "stderr_tail": tail}


def stderr_tail(text: str) -> str:
    """A dead worker's stderr, trimmed: from faulthandler's report of a fatal signal on (innermost
    frame first), else its last lines."""
    lines = [line.rstrip() for line in text[-64 * 1024:].splitlines()
             if line.strip() and not line.startswith("Extension modules:")]  # faulthandler's list
    fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
    kept = lines[fatal[-1]:][:STDERR_TAIL_LINES] if fatal else lines[-STDERR_TAIL_LINES:]
    return "\n".join(kept)[:STDERR_TAIL_CHARS]


def stderr_summary(tail: str) -> str:
    """One line of a dead worker's stderr: the fatal error and its innermost Python frame when
    faulthandler wrote them, else the last line."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("Fatal Python error"):
            frames = [f for f in lines[index + 1:] if f.startswith("File ")]
            return line + (f", in {frames[0]}" if frames else "")
    return lines[-1][:300] if lines else ""


# In the worker

_channel = None
_skip: set[str] = set()


def in_worker() -> bool:
    return _channel is not None


def _send(message: dict) -> None:
    from suite.results import json_ready

    _channel.write(json.dumps(json_ready(message), allow_nan=False) + "\n")
    _channel.flush()


def case(key: str, record: dict | None = None, budget_s: float | None = None) -> bool:
    """Before running a case: says which it is, the record it becomes should it not finish, and
    its budget in seconds. False: skip it (a fresh worker's run of a task after a crash). Outside
    a worker it does nothing and returns True, so that checks call it unconditionally."""
    if _channel is None:
        return True
    if key in _skip:
        return False
    _send({"case": key, "record": record or {}, "budget_s": budget_s})
    return True


def where(**fields) -> None:
    """Inside a case: fields to add to its record should it not finish (the sample it is on)."""
    if _channel is not None:
        _send({"where": fields})


def resolve(task: str):
    """The function a task names, "module:qualname"."""
    module, _, qualname = task.partition(":")
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def free_device_memory() -> None:
    """After an out-of-memory error: the allocator's cached blocks back to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _exit_with_parent() -> None:
    """A worker whose parent died (killed, so that it closed nothing) stops within a second,
    even in the middle of a long case."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="torchsuite-parent-watch", daemon=True).start()


def main() -> int:
    global _channel, _skip
    _channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a check's prints go to stderr, never into the channel
    sys.stdout = sys.stderr
    faulthandler.enable(file=2, all_threads=False)  # a fatal signal leaves its Python stack on stderr: the crash's record shows it
    _exit_with_parent()
    import_user_modules()
    for line in sys.stdin:
        request = json.loads(line)
        _skip = set(request.get("skip", ()))
        try:
            result = resolve(request["task"])(*request.get("args", ()))
            for record in result if isinstance(result, Iterable) else ():  # a task may return nothing
                _send({"record": record})
        except SuiteError as err:  # bad input (an unknown name): the user's error, in one line
            _send({"user_error": str(err)})
        except Exception as err:  # noqa: BLE001 - reported, and the worker takes the next task
            # a task that never imported torch cannot have raised its error (nor has memory to free)
            torch = sys.modules.get("torch")
            oom = torch is not None and isinstance(err, torch.OutOfMemoryError)
            if oom:
                free_device_memory()
            _send({"raised": one_line(err), "outcome": OUT_OF_MEMORY if oom else CRASH,
                   "traceback": traceback.format_exc()[-STDERR_TAIL_CHARS:]})
        else:
            _send({"end": True})
    return 0


if __name__ == "__main__":  # run as suite.isolation, the module the tasks' case() and where() see
    from suite.isolation import main as worker_main

    sys.exit(worker_main())
