"""Every figure of a run from several fresh processes, in interleaved rounds, merged per figure.

The variance that matters lives between processes: on this project's 2-core VM five quiet
reruns of one plan disagreed by 4-7% while each process's own samples claimed 1%. Memory
layout, the allocator's history and thread placement are drawn anew with each interpreter, and
stay put for its life; more samples in one process cannot see them. So `torchsuite run` times
its figures in PROCESSES fresh interpreters (`python -m suite.timing.worker`, not forks of one
parent image), one a round. Each round times every figure, in the plan's order on even rounds
and reversed on odd ones (a palindrome, as a slow minute of the machine then lands on different
figures each round). A figure's median is the median of its processes' medians; its 95% interval
is a t interval on the log process medians with the figure's own degrees of freedom (processes
- 1), and a between-process spread that is the typical one of the run's figures of its setup, or
the figure's own where larger (stats.figure_log_sd). The run's figures steady the estimate of the
spread, which is the machine's more than the figure's; the degrees of freedom stay the figure's,
because figures timed in the same round share the machine's moment and are not independent: on
this project's VM, ten quick runs' intervals held another run's median 66% of the time with
degrees of freedom pooled over the figures, 94% with the figure's own.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from suite.errors import SuiteError
from suite.isolation import IMPORT_ENV, exit_description, stderr_summary, stderr_tail
from suite.timing.figure import FLAGS, above_peak
from suite.timing.stats import between_process_interval, figure_log_sd, is_noisy, latency_percentiles, typical_log_variance

PROCESSES, QUICK_PROCESSES = 4, 3
# Importing torch and the suite, before the first figure of a round.
INTERPRETER_START_S = 3.0
# Fields that describe one process's measurement; a merged record lists them per process.
PER_PROCESS = ("median_s", "iqr_s", "samples", "steps_per_sample", "warmup_steps", "warmup_s",
               "stop_reason", "attempts", "flags", "canary_before_s", "canary_after_s", "peak_mem_bytes",
               "round")  # round: the process's round in an interleaved session (suite.ab), which pairs the sides
# A process's flags that its figure keeps; noisy, quick and one_process are the figure's own to say.
PROCESS_FLAGS = tuple(flag for flag in FLAGS if flag not in ("noisy", "above_peak", "quick", "one_process"))
DISTURBED = {"contended", "drift", "throttled"}
# A held worker (WorkerProcess(held=True)): it imports what every figure needs (torch, then the
# modules TORCHSUITE_IMPORT names, as a worker does first), says READY_LINE, waits until its requests
# arrive on stdin, then runs the code under test's own worker module, so older commits' workers
# (ab, bisect) start held too. The optimizers' constructors import torch._dynamo (1.4 s of a 2-core
# VM's 5.5 s ab process): a worker timing a train step pays it anyway.
READY_LINE = '{"ready": true}'
HELD_START = f"""
import faulthandler, importlib, os, runpy, select, sys
faulthandler.enable(file=2, all_threads=False)  # a module that kills it leaves its stack, as in a worker
first = [name.strip() for name in os.environ.get({IMPORT_ENV!r}, "").split(",") if name.strip()]
for name in ["torch", *first, "torch._dynamo", "suite.timing.core"]:
    try:
        importlib.import_module(name)
    except Exception:  # the worker's own import says what is wrong, as an unheld worker's would
        break
sys.stdout.write({READY_LINE!r} + "\\n")
sys.stdout.flush()
select.select([sys.stdin], [], [])
runpy.run_module("suite.timing.worker", run_name="__main__", alter_sys=True)
"""
READY_TIMEOUT_S = 300.0  # importing torch on a slow disk, beside the other build's worker


class WorkerError(SuiteError):
    """A figure the worker process did not time: it raised ("error"), died ("crash") or hung
    ("timeout"); `stderr_tail`: the worker's last lines of stderr when it was lost."""

    def __init__(self, message: str, outcome: str = "error", stderr_tail: str = ""):
        super().__init__(message)
        self.outcome, self.stderr_tail = outcome, stderr_tail


def processes_for(quick: bool) -> int:
    return QUICK_PROCESSES if quick else PROCESSES


@dataclass(frozen=True)
class Interpreter:
    """Which Python runs the workers, where (the code under test's root) and with what environment."""

    python: str = sys.executable
    cwd: str | None = None
    env: dict = field(default_factory=dict)
    label: str = ""


def figure_timeout_s(kwargs: dict) -> float:
    """Seconds a worker may take on one figure before it is called hung."""
    from suite.timing.distributed import TIMEOUT_FIXED_S
    from suite.timing.options import sampling_rules

    rules = sampling_rules(bool(kwargs.get("quick")), kwargs.get("min_run_time"))
    compile_s = 300.0 if str(kwargs.get("setup", "")).endswith("-compile") else 0.0
    return TIMEOUT_FIXED_S + compile_s + rules["attempts"] * (rules["quiet_budget_s"] + 3 * rules["time_cap_s"])


class WorkerProcess:
    """One fresh interpreter timing `requests` in order; `result(i)` waits for the i-th answer.

    Answers must be read in order. A worker that dies or hangs is killed with its whole process
    group (its DDP ranks too), and every request it had not answered raises WorkerError. A worker
    whose parent died stops at its next answer (its stdout is gone).
    """

    def __init__(self, requests: list[dict], interpreter: Interpreter = Interpreter(), *, held: bool = False,
                 env: dict | None = None):
        """held: the interpreter imports torch and the timing code, then waits: `ready()` waits
        for that, `release()` hands it its requests. Two builds' workers then import side by side
        and time one after the other (suite.ab). env: added to the interpreter's."""
        self.requests = requests
        self.answers: dict[int, dict] = {}
        self.failure: WorkerError | None = None  # how the process was lost, once it was
        self.stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        env = {**os.environ, **interpreter.env, **(env or {})}
        if interpreter.cwd:  # the code under test comes first on the path
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [interpreter.cwd, env.get("PYTHONPATH")]))
        command = ["-c", HELD_START] if held else ["-m", "suite.timing.worker"]
        try:
            self.proc = subprocess.Popen(
                [interpreter.python, *command], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self.stderr, cwd=interpreter.cwd, env=env,
                text=True, preexec_fn=os.setpgrp)  # its own group, to kill with its DDP ranks
        except OSError as err:
            raise WorkerError(f"cannot start {interpreter.python}: {err}") from None
        atexit.register(self.close)  # a run stopped by Ctrl-C leaves no worker behind
        self._buffer = ""
        if not held:
            self.release()

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until a held worker has imported what it times with. A worker lost meanwhile (or
        one that says something else) fails every request: result() raises how."""
        line = self._read_line(timeout_s, "while importing torch")
        if line is not None and line.strip() != READY_LINE:
            self._fail(f"the worker wrote {line[:120]!r} instead of saying it was ready")

    def release(self) -> None:
        """Hand the worker its requests; it starts timing them (a worker already lost: result() says how)."""
        if self.failure is not None:
            return
        try:
            self.proc.stdin.write(json.dumps({"requests": self.requests}))
        except BrokenPipeError:  # it died before reading its requests: result() says how
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):  # the flush of what it did not read
                self.proc.stdin.close()

    def result(self, index: int) -> dict:
        while index not in self.answers and self.failure is None:
            self._read_one(figure_timeout_s(self.requests[len(self.answers)]["kwargs"]))
        if index in self.answers:
            answer = self.answers[index]
            if "error" in answer:
                raise WorkerError(answer["error"])
            return answer["record"]
        raise self.failure

    def _read_one(self, timeout_s: float) -> None:
        line = self._read_line(timeout_s, "on one figure")
        if line is None:
            return
        try:
            answer = json.loads(line)
            self.answers[int(answer["index"])] = answer
        except (ValueError, KeyError, TypeError):
            self._fail(f"the worker wrote a line that is not an answer: {line[:120]!r}")

    def _read_line(self, timeout_s: float, doing: str) -> str | None:
        """The worker's next line on stdout; None when it died or hung first (self.failure says how)."""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while "\n" not in self._buffer:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    self._fail(f"the worker timed out after {timeout_s:.0f} s {doing}", "timeout")
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16).decode("utf-8", "replace")
                if not chunk:
                    self.proc.wait()
                    self._fail(f"the worker died of {exit_description(self.proc.returncode)} "
                               f"before answering: {stderr_summary(self._stderr_tail()) or 'nothing on stderr'}",
                               "crash")
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split("\n", 1)
        return line

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return stderr_tail(self.stderr.read())

    def _fail(self, reason: str, outcome: str = "error") -> None:
        self.failure = WorkerError(reason, outcome, self._stderr_tail() if outcome != "error" else "")
        self.close()

    def close(self) -> None:
        atexit.unregister(self.close)
        with contextlib.suppress(OSError):  # a held worker never released
            self.proc.stdin.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


def round_order(requests: list, round_index: int) -> list:
    """Figures on one worker pool kept together (one pool start each); reversed every other round."""
    from suite.timing.worker import pool_key

    ordered = sorted(requests, key=lambda r: (pool_key(r) is not None, str(pool_key(r))))
    return ordered if round_index % 2 == 0 else ordered[::-1]


def compile_once(requests: list, round_index: int) -> list:
    """After the first round, a compiled figure compiles once over the cache its first process
    left, without timing the compile again (suite.timing.compiled). `torchsuite run`'s rounds only:
    ab and bisect also run older commits' workers, which do not know the option."""
    from suite.timing.setups import COMPILE_SETUPS

    if round_index == 0:
        return requests
    return [{**r, "kwargs": {**r["kwargs"], "measure_compile": False}}
            if r["kwargs"].get("setup") in COMPILE_SETUPS else r for r in requests]


def merge_processes(records: list[dict], log_sd: float | None) -> dict:
    """One figure's record from its processes' records (each one process's, as time_model gives).

    The first record gives the fields every process shares (model, options, FLOPs); the
    measurement is the processes': median of their medians, the between-process interval, flags
    any process had (and `one_process` when there was only one), all raw samples pooled.
    """
    first = records[0]
    medians = [r["median_s"] for r in records]
    median = statistics.median(medians)
    pooled = [s for r in records for s in r["samples"]]
    # The typical process's own IQR: processes that disagree with each other widen the interval,
    # which is what it is for; `noisy` says a process's own samples scatter.
    iqr = statistics.median(r["iqr_s"] for r in records)
    interval = between_process_interval(medians, log_sd, len(records) - 1) if len(records) > 1 else None
    seen = {flag for r in records for flag in r.get("flags", ())}
    noisy = is_noisy(iqr, median)
    flags = {"noisy": noisy, **{f: f in seen for f in PROCESS_FLAGS},
             "quick": bool(first.get("quick")), "one_process": len(records) == 1}
    scale = first["median_s"] / median  # throughput and FLOP/s follow the figure's median
    flags["above_peak"] = above_peak(first["peak_fraction"] * scale if first.get("peak_fraction") is not None else None)
    merged = {
        **first,
        "median_s": median, "iqr_s": iqr, "iqr_fraction": iqr / median, "noisy": noisy,
        "ci95_low_s": interval[0] if interval else None, "ci95_high_s": interval[1] if interval else None,
        "ci_half_width_fraction": (interval[1] - interval[0]) / 2 / median if interval else None,
        "interval_method": "between_processes" if interval else None,
        "flags": [flag for flag in FLAGS if flags.get(flag)],
        "samples": pooled,
        "processes": [{key: r.get(key) for key in PER_PROCESS} for r in records],
        "process_log_sd": log_sd,
        "canary_before_s": statistics.median(r["canary_before_s"] for r in records),
        "canary_after_s": statistics.median(r["canary_after_s"] for r in records),
        "peak_mem_bytes": max(r["peak_mem_bytes"] for r in records),
        # rates follow the median; a figure without FLOPs (a user's function) has None
        **{rate: first[rate] * scale if first.get(rate) is not None else None
           for rate in ("throughput", "tokens_per_s", "achieved_flops_per_s", "peak_fraction")},
    }
    if "latency_p50_s" in first:  # a serving figure: its percentiles over every process's calls
        merged.update(latency_percentiles(pooled))
    for key in ("compile_cold_s", "compile_warm_s"):
        values = [r[key] for r in records if r.get(key) is not None]
        merged[key] = statistics.median(values) if values else None
    return merged


def merge_figures(per_figure: dict[str, list[dict]]) -> dict[str, dict]:
    """Each figure's merged record. Its between-process spread is the typical one of the run's
    figures of its setup on its device (DDP ranks vary more than one process does), or its own
    where that is larger (stats.figure_log_sd). Processes that were disturbed (contended, drift,
    throttled), which say so in their flags, are left out of the typical spread."""
    measured = {figure: records for figure, records in per_figure.items() if records}
    typical = {}
    for group in {(r[0]["device"], r[0]["setup"]) for r in measured.values()}:
        typical[group] = typical_log_variance([
            [r["median_s"] for r in records if not set(r.get("flags", ())) & DISTURBED]
            for records in measured.values() if (records[0]["device"], records[0]["setup"]) == group])
    return {figure: merge_processes(records, figure_log_sd([r["median_s"] for r in records],
                                                           typical[(records[0]["device"], records[0]["setup"])]))
            for figure, records in measured.items()}


def code_root() -> Path:
    """The directory that holds this suite's `suite` package."""
    return Path(__file__).resolve().parents[2]
