"""The worker boundary (suite.isolation): a case that kills its process, hangs or raises is a
record naming it, and the task goes on from the next case in a fresh process. The plants are
tests/isolation_tasks.py (no torch, so workers start fast) and, through torch.library, a broken
aten::erf (tests/broken_kernels.py) under `torchsuite ops`; `torchsuite run` with the same plants
is tests/test_run.py's (slow)."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite import isolation, results
from suite.isolation import (CRASH, OUT_OF_MEMORY, TIMEOUT, IsolatedWorker, TaskError, WorkerCrash,
                             exit_description, stderr_summary, stderr_tail)

TESTS = Path(__file__).parent
NAMES = ["a", "b", "c"]


@pytest.fixture
def worker():
    found = IsolatedWorker()
    yield found
    found.close()


@pytest.mark.parametrize("how, outcome, said", [
    ("segv", CRASH, "SIGSEGV (signal 11)"), ("abort", CRASH, "SIGABRT (signal 6)"),
    ("exit", CRASH, "exit status 3"), ("raise", CRASH, "raised RuntimeError: planted"),
    ("oom", OUT_OF_MEMORY, "raised OutOfMemoryError: planted")])
def test_a_case_that_dies_or_raises_is_its_record_and_the_task_goes_on(worker, how, outcome, said):
    records = list(worker.run("isolation_tasks:cases", NAMES, "b", how))
    assert [r["case"] for r in records] == NAMES  # every case once, in order
    bad = records[1]
    assert bad["outcome"] == outcome and bad["passed"] is False and said in bad["detail"], bad
    assert bad["sample"] == "sample 1"  # where it was, written before it ran
    assert all(r["passed"] for r in (records[0], records[2]))
    lost = how in ("segv", "abort", "exit")
    assert (records[0]["pid"] != records[2]["pid"]) == lost  # a fresh process only after a death
    assert worker.started == (2 if lost else 1)
    if how == "segv":  # faulthandler's report names the Python frame that was running
        assert "Fatal Python error: Segmentation fault" in bad["detail"] and "in misbehave" in bad["stderr_tail"]


def test_a_case_past_its_budget_is_killed_and_called_a_timeout():
    worker = IsolatedWorker(case_budget_s=1.0)
    try:  # the hang sleeps an hour: pytest's own limit, not a timing here, would catch a budget ignored
        records = list(worker.run("isolation_tasks:cases", NAMES, "a", "hang"))
    finally:
        worker.close()
    assert [(r["case"], r["outcome"] if "outcome" in r else "ok") for r in records] == [
        ("a", TIMEOUT), ("b", "ok"), ("c", "ok")]
    assert "budget of 1 s" in records[0]["detail"]


def test_the_worker_lives_on_for_the_next_task_and_prints_do_not_reach_the_channel(worker):
    first = list(worker.run("isolation_tasks:cases", NAMES, "b", "print"))
    second = list(worker.run("isolation_tasks:cases", ["d"]))
    assert [r["case"] for r in first + second] == [*NAMES, "d"] and worker.started == 1
    assert len({r["pid"] for r in first + second}) == 1
    assert worker.call("isolation_tasks:pid")[0]["pid"] == first[0]["pid"]


def test_a_death_outside_any_case_is_the_whole_task(worker):
    produced = []
    with pytest.raises(WorkerCrash) as caught:
        for record in worker.run("isolation_tasks:no_cases", "abort"):
            produced.append(record)
    assert [r["case"] for r in produced] == ["first"]  # what came before the crash is kept
    assert caught.value.outcome == CRASH and "SIGABRT" in caught.value.detail
    assert list(worker.run("isolation_tasks:cases", ["d"]))[0]["passed"]  # a fresh worker takes the next task


def test_bad_input_and_a_broken_set_up_are_errors_not_crashes(worker):
    with pytest.raises(TaskError) as caught:
        list(worker.run("isolation_tasks:bad_input"))
    assert caught.value.user_error and str(caught.value) == "unknown thing 'x'; valid: a, b"
    with pytest.raises(TaskError) as caught:
        list(worker.run("isolation_tasks:set_up_fails"))
    assert not caught.value.user_error and "ValueError: the task's set-up broke" in str(caught.value)
    assert "set_up_fails" in caught.value.traceback
    assert worker.started == 1  # neither cost the worker


def test_ctrl_c_while_a_crashed_case_is_being_recovered_stops_cleanly(worker, monkeypatch):
    # The first crash makes the worker start a fresh process; Ctrl-C arrives while it starts.
    real_start = IsolatedWorker._start

    def interrupted_start(self):
        if self.started == 1:
            raise KeyboardInterrupt
        real_start(self)

    monkeypatch.setattr(IsolatedWorker, "_start", interrupted_start)
    produced = []
    with pytest.raises(KeyboardInterrupt):
        for record in worker.run("isolation_tasks:cases", NAMES, "a", "segv"):
            produced.append(record)
    assert [r["outcome"] for r in produced] == [CRASH]  # the crash's record came first
    assert not worker.running


def test_a_reader_that_stops_mid_task_leaves_no_worker(worker):
    records = worker.run("isolation_tasks:cases", NAMES)
    first = next(records)
    records.close()
    assert not worker.running
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)


def test_a_worker_whose_parent_was_killed_stops(tmp_path):
    # A parent that dies without closing anything (SIGKILL) while its worker hangs in a case.
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
              "from suite.isolation import IsolatedWorker\n"
              "w = IsolatedWorker()\n"
              "for r in w.run('isolation_tasks:cases', ['a', 'b'], 'b', 'hang'): print(r['pid'], flush=True)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the worker outlived its killed parent")


def test_exit_descriptions_and_stderr_trimming():
    assert exit_description(-11) == "SIGSEGV (signal 11)" and exit_description(3) == "exit status 3"
    text = "\n".join([f"noise {i}" for i in range(30)] + [
        "Fatal Python error: Aborted", "", "Current thread 0x1 (most recent call first):",
        '  File "kernel.py", line 3 in broken', '  File "check.py", line 9 in run', "",
        "Extension modules: numpy, torch (total: 2)"])
    tail = stderr_tail(text)
    assert tail.startswith("Fatal Python error: Aborted") and "Extension modules" not in tail
    assert stderr_summary(tail) == 'Fatal Python error: Aborted, in File "kernel.py", line 3 in broken'
    assert stderr_summary(stderr_tail("one\ntwo\n")) == "two" and stderr_summary("") == ""


def _planted_env(plant: str) -> dict:
    """The environment of a `torchsuite ops` whose workers import tests/broken_kernels.py, planting `plant`."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
            "TORCHSUITE_IMPORT": "broken_kernels", "BROKEN_KERNEL": plant}


def _ops_cli(*args, plant: str, timeout: float = 240):
    return subprocess.run([sys.executable, "-m", "suite", "ops", *args], capture_output=True, text=True,
                          env={**os.environ, **_planted_env(plant)}, timeout=timeout)


# Two workers that import torch and op_db (the second after the first died), 9 s: launched when
# collection ends (tests/conftest.py), beside the tests before it.
@pytest.mark.launch([sys.executable, "-m", "suite", "ops", "--ops", "erf,exp,sigmoid", "--dtypes", "float32",
                     "--checks", "forward"], env=_planted_env("erf:segv"))
def test_torchsuite_ops_judges_the_healthy_ops_beside_a_kernel_that_segfaults(launched):
    returncode, out = launched.wait(timeout=240)
    assert returncode == 1, out  # not as declared, and not a signal
    assert "3 ops, 3 verdicts: 2 pass, 0 fail, 1 crash" in out
    (line,) = [line for line in out.splitlines() if "NOT AS DECLARED" in line]
    assert "erf forward float32: crash" in line and "SIGSEGV (signal 11)" in line and "[sample SampleInput(" in line


@pytest.mark.slow
@pytest.mark.parametrize("plant, said", [("erf:abort", "SIGABRT"), ("erf:hang", "timeout")])
def test_torchsuite_ops_judges_the_healthy_ops_beside_an_aborting_or_hanging_kernel(plant, said):
    proc = _ops_cli("--ops", "erf,exp,sigmoid", "--dtypes", "float32", "--checks", "forward", "--case-timeout", "10",
                    plant=plant)
    assert proc.returncode == 1 and " 2 pass, " in proc.stdout, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if "NOT AS DECLARED" in line]
    assert "erf forward float32" in line and said in line


# `torchsuite run` on the boundary: its steps, its timing rounds, its report, and compare

def _store(tmp_path):
    return results.ResultsStore(tmp_path, {"name": "box"}, run={})


def test_a_run_step_on_the_worker_records_each_lost_case_and_a_step_that_dies_whole(tmp_path, worker, monkeypatch):
    from suite.progress import Progress
    from suite.runner import PlanStep, execute

    def step(label, task):
        return PlanStep("conformance", label, lambda: iter(()), {"stage": "conformance", "step_of": label}, 1.0,
                        task=task)

    steps = [step("cases", ("isolation_tasks:cases", (NAMES, "b", "segv"))),
             step("whole", ("isolation_tasks:no_cases", ("hang",))),
             step("after", ("isolation_tasks:cases", (["d"],)))]
    store, stream = _store(tmp_path), io.StringIO()
    monkeypatch.setattr(isolation, "TASK_BUDGET_S", 1.0)  # "whole" announces no case: the task's budget is its own
    execute(steps, store, Progress([s.kind for s in steps], stream=stream), worker=worker)
    kinds = [(r["kind"], r.get("case"), r.get("outcome")) for r in store.records]
    assert kinds == [("conformance", "a", None), ("conformance", "b", CRASH), ("conformance", "c", None),
                     ("conformance", "first", None), ("crash", None, TIMEOUT), ("conformance", "d", None)]
    whole = store.records[4]
    assert whole["step"] == "whole" and whole["step_of"] == "whole"  # the step's context names it
    assert "b c: crash: the worker died of SIGSEGV" in stream.getvalue()  # said as it happened
    assert [s["label"] for s in store.data["run"]["steps"]] == ["cases", "whole", "after"]


def test_conformance_steps_run_two_at_a_time_and_the_next_timing_waits_for_both(tmp_path, worker):
    from suite.progress import Progress
    from suite.runner import PlanStep, execute

    def step(label, task):
        return PlanStep("conformance", label, lambda: iter(()), {"stage": "conformance", "step_of": label}, 1.0,
                        task=task)

    def timing():  # runs here, in plan order: every conformance record is in the store by then
        yield {"kind": "timing", "figure": "f", "before_it": sorted(r.get("case") or r["kind"] for r in store.records)}

    marks = tmp_path / "marks"
    marks.mkdir()
    # "a" lingers after meeting "b": the other lane ends meanwhile, and this lane takes its end as
    # it comes (it once waited for that end again, for ever)
    steps = [step("a", ("isolation_tasks:meet", ("a", "b", str(marks), 1.0))),
             step("b", ("isolation_tasks:meet", ("b", "a", str(marks)))),
             step("dies", ("isolation_tasks:no_cases", ("segv",))),
             step("after", ("isolation_tasks:cases", (["d"],))),
             PlanStep("timing", "timing f", timing, {"stage": "timing"}, 1.0)]
    store, stream, side = _store(tmp_path), io.StringIO(), IsolatedWorker()
    try:
        execute(steps, store, Progress([s.kind for s in steps], stream=stream), worker=worker, side_worker=side)
    finally:
        side.close()
    met = {r["case"]: r for r in store.records if r.get("check") == "met"}
    assert met["a"]["passed"] and met["b"]["passed"], "the two steps did not run at the same time"
    assert met["a"]["pid"] != met["b"]["pid"]
    crash = next(r for r in store.records if r["kind"] == "crash")
    assert crash["step"] == "dies" and crash["outcome"] == CRASH  # a lane's crash is the step's record
    timing_record = store.records[-1]
    assert timing_record["kind"] == "timing" and timing_record["before_it"] == ["a", "a", "b", "crash", "d", "first"]
    profile = {s["label"]: s for s in store.data["run"]["steps"]}
    assert set(profile) == {"a", "b", "dies", "after", "timing f"}
    assert profile["b"].get("beside") and not profile["a"].get("beside") and profile["b"]["records"] == 1
    assert "b: done beside it, on a second worker" in stream.getvalue()


def test_the_plan_estimate_shares_each_group_of_conformance_sources_between_two_lanes():
    from suite.runner import PlanStep, plan_estimate_s

    def step(kind, seconds, task=("isolation_tasks:cases", ([],)), pool_key=None):
        return PlanStep(kind, f"{kind} {seconds}", lambda: iter(()), {}, seconds, pool_key=pool_key, task=task)

    steps = [step("limits", 1.0), step("conformance", 7.0, pool_key=("conformance", "cpu")),
             step("conformance", 40.0), step("conformance", 5.0), step("conformance", 180.0),
             step("conformance", 150.0), step("timing", 2.0, task=None)]
    # the lanes take 40 | 5, then 180 on the free one (5 + 180), then 150 on the other (40 + 150)
    assert plan_estimate_s(steps, lanes=2) == 1.0 + 7.0 + max(40.0 + 150.0, 5.0 + 180.0) + 2.0
    assert plan_estimate_s(steps) == sum(s.estimate_s for s in steps)


class FakeTimingWorker:
    """A round's timing worker: answers its requests in order; the one named `dies` kills it."""

    opened: list[list[str]] = []

    def __init__(self, requests, dies="b"):
        FakeTimingWorker.opened.append([r["figure"] for r in requests])
        self.requests, self.dies, self.failure = requests, dies, None

    def result(self, index):
        from suite.timing.processes import WorkerError

        if self.failure is not None:
            raise self.failure
        figure = self.requests[index]["figure"]
        if figure == self.dies:
            self.failure = WorkerError(f"the worker died of SIGSEGV (signal 11) on {figure}", "crash", "Fatal ...")
            raise self.failure
        return {"figure": figure}

    def close(self):
        pass


def test_a_timing_round_goes_on_in_a_fresh_process_after_one_dies():
    from suite.runner import _Round
    from suite.timing.processes import WorkerError

    FakeTimingWorker.opened = []
    this_round = _Round(FakeTimingWorker, [{"figure": f} for f in "abc"], round_index=1)
    assert this_round.result(0) == {"figure": "a"}
    with pytest.raises(WorkerError) as lost:
        this_round.result(1)
    assert lost.value.outcome == CRASH
    assert this_round.result(2) == {"figure": "c"}  # before: "c" failed with "b"'s worker
    assert FakeTimingWorker.opened == [["a", "b", "c"], ["c"]]


def _results(path, machine, records):
    data = {"format": results.FORMAT, "schema_version": results.SCHEMA_VERSION, "status": "complete",
            "machine": {"name": machine}, "run": {}, "peaks": [], "records": records}
    path.write_text(json.dumps(data))
    return path


def _figure(name, median):
    return {"kind": "timing", "figure": name, "model": name, "mode": "train", "device": "cpu", "setup": "cpu",
            "median_s": median, "iqr_s": median * 0.01, "samples": [median] * 6, "flags": []}


def test_the_report_counts_crashes_apart_and_compare_calls_a_lost_figure_or_check_a_regression(tmp_path, tables_only):
    from suite.report import build_report
    from suite.report.compare import compare

    check = {"kind": "conformance", "suite": "ops", "case": "erf", "check": "forward float32", "device": "cpu",
             "passed": True, "outcome": "pass", "detail": ""}
    base = _results(tmp_path / "base.json", "before", [check, _figure("m1", 0.01), _figure("m2", 0.02)])
    new = _results(tmp_path / "new.json", "after", [
        {**check, "passed": False, "outcome": CRASH, "detail": "crash: the worker died of SIGSEGV (signal 11)"},
        {**check, "case": "exp", "passed": False, "outcome": "fail", "detail": "wrong"},
        _figure("m1", 0.01),
        {"kind": "crash", "stage": "timing", "figure": "m2", "model": "m2", "process": 1, "outcome": TIMEOUT,
         "detail": "the worker timed out after 60 s on one figure"}])
    header, rows = compare(base, new)
    regressed = {row.figure: row.why for row in rows if row.verdict == "regressed"}
    assert set(regressed) == {"m2", "check ops erf forward float32 cpu"}, rows
    assert "timeout in the new run" in regressed["m2"] and header["counts"]["regressed"] == 2
    assert main_compare(base, new) == 1
    text = next(p for p in build_report([base, new], out_dir=tmp_path / "report") if p.suffix == ".md").read_text()
    conformance = text.split("## Conformance")[1].split("## ")[0]
    # the crashed check and the figure's lost process count as crashed, the wrong answer as failed
    assert _row_counts(conformance, "after") == (0, 1, 2), conformance
    lost = text.split("## Crashes, hangs and out-of-memory")[1].split("## ")[0]
    assert "ops erf forward float32" in lost and "timing m2 (process 1)" in lost and "SIGSEGV" in lost


def _row_counts(table: str, machine: str) -> tuple:
    row = next(line for line in table.splitlines() if line.startswith(f"| {machine}"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    return tuple(int(c) for c in cells[1:4])  # passed, failed, crashed


def main_compare(base, new) -> int:
    from suite.cli import main

    return main(["compare", str(base), str(new), "--out", str(Path(base).parent / "compare")])


@pytest.mark.slow  # 11 s; the boundary's own Ctrl-C test above is in the default run
def test_ctrl_c_while_a_run_recovers_from_a_crashed_op_leaves_an_interrupted_file_and_no_worker(tmp_path, monkeypatch):
    from suite.conformance.sources import select_sources
    from suite.runner import TimingApi, run_suite

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TORCHSUITE_IMPORT", "broken_kernels")  # the worker's aten::erf kills it
    monkeypatch.setenv("BROKEN_KERNEL", "erf:segv")
    workers = []
    real_start = IsolatedWorker._start

    def start(self):
        workers.append(self)
        if self.started == 1:  # the fresh process after erf's crash: Ctrl-C arrives now
            raise KeyboardInterrupt
        real_start(self)

    monkeypatch.setattr(IsolatedWorker, "_start", start)
    no_timings = TimingApi(open_worker=None, calibrate=lambda device, quick: {"flops_per_s": 1.0},
                           iter_setups=lambda devices, quick, models: [])
    with pytest.raises(KeyboardInterrupt):
        run_suite(device_request="cpu", quick=True, out_dir=tmp_path / "r", report_dir=tmp_path / "report",
                  verdict_sources=select_sources(["ops"]), timing=no_timings, limit_names=[], stream=io.StringIO())
    data = results.load(next((tmp_path / "r").glob("*.json")))
    assert data["status"] == "interrupted"
    crashed = [r for r in data["records"] if r.get("outcome") == CRASH]
    assert [(r["case"], "SIGSEGV" in r["detail"]) for r in crashed] == [("erf", True)]
    assert len(data["records"]) > 1  # the ops before erf are kept
    assert not workers[0].running and not (tmp_path / "report").exists()
