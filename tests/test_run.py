"""`torchsuite run`: the main job end to end, its progress display, interruption and user errors."""
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from suite import results
from suite.cases.models import models_for
from suite.cli import main
from suite.conformance.sources import VerdictSource
from suite.progress import Progress
from suite.runner import TimingApi, run_suite


def run_cli(*args, timeout=240):
    """`torchsuite run ARGS` in a session of its own, which is killed whole (the run and any worker
    it started) when the run is over, overdue, or the test is stopped while waiting."""
    proc = subprocess.Popen([sys.executable, "-m", "suite", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        _, stderr = proc.communicate(timeout=30)
        pytest.fail(f"torchsuite run did not finish in {timeout} s: it hung. Its stderr ends:\n{stderr[-3000:]}")
    finally:
        _kill_session(proc)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _kill_session(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left in its process group
        pass


def only_file(directory):
    (path,) = [p for p in directory.iterdir() if p.suffix == ".json"]
    return path


# The default run's longest test, so it is launched (tests/conftest.py): it runs from the end of
# collection on, beside the tests before it, on the core they leave idle. One cheap limit, end to
# end; the rest are tests/test_limits.py's. One source on the worker pool, one in this process; each
# is tested on its own elsewhere (the op sweep by tests/test_opinfo.py). Two processes a figure:
# the quick plan's three are tests/test_processes.py's.
@pytest.mark.launch([sys.executable, "-m", "suite", "run", "--device", "cpu", "--models", "speech_cnn", "--quick",
                     "--out", "{dir}/results", "--report-dir", "{dir}/report", "--machine-name", "ci box",
                     "--limits", "launch_latency", "--processes", "2", "--checks", "autograd,resume"], early=True)
def test_a_one_model_quick_run_writes_one_results_file_and_a_report(launched):
    # 253 s once on 2 cores that other test runs shared: a bound that only catches a hang
    returncode, output = launched.wait(timeout=540)
    assert returncode == 0, output
    data = results.load(only_file(launched.directory / "results"))
    assert data["status"] == "complete" and data["machine"]["name"] == "ci box"
    assert data["peaks"] and data["peaks"][0]["flops_per_s"] > 0
    timings = [r for r in data["records"] if r["kind"] == "timing"]
    assert {r["model"] for r in timings} == {"speech_cnn"}
    assert {r["setup"] for r in timings} == {"cpu"}
    assert [(r["limit"], r["variant"], r["unit"]) for r in data["records"] if r["kind"] == "limit"] == [
        ("launch_latency", "wall", "us")]
    assert "## Machine limits" in (launched.directory / "report" / "report.md").read_text()
    assert all(r["samples"] and r["median_s"] > 0 for r in timings)
    assert all(len(r["processes"]) == 2 for r in timings)
    assert not [r for r in data["records"] if r["kind"] == "error"], data["records"]
    assert data["run"]["verdict_sources"] == [f"suite.conformance.{name}:verdicts" for name in (
        "parallel.resume", "autograd.verdicts")]  # the run's order: the pools' sources first
    assert {r["suite"] for r in data["records"] if r["kind"] == "conformance"} == {"autograd", "ddp"}  # resume: ddp
    assert not [r for r in data["records"] if r["kind"] == "convergence"]  # full runs' (test below)
    for name in ("comparison.csv", "report.md", "report.html", "throughput.png"):
        assert (launched.directory / "report" / name).exists()
    assert "[1/" in output and "left)" in output  # plain progress lines: stderr is a file
    # where the time went: every step of the plan with its estimate and wall time, the slowest printed
    steps, costs = data["run"]["steps"], data["run"]["costs_s"]
    assert [s["kind"] for s in steps][:2] == ["calibration", "limits"] and steps[-1]["kind"] == "timing"
    assert all(s["wall_s"] >= 0 and s["estimate_s"] >= 0 for s in steps)
    assert sum(s["records"] for s in steps) == len(data["records"])
    assert costs["total"] >= sum(s["wall_s"] for s in steps) + costs["report"]
    slowest = max(steps, key=lambda s: s["wall_s"])
    assert f"the slowest steps of {costs['total']:.0f} s" in output and slowest["label"] in output


@pytest.mark.slow
def test_the_full_quick_cpu_run_times_every_model_and_passes_every_check(tmp_path):
    proc = run_cli("--device", "cpu", "--quick", "--convergence", "--out", str(tmp_path / "results"),
                   "--report-dir", str(tmp_path / "report"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = results.load(only_file(tmp_path / "results"))
    timed = set(models_for("cpu"))  # the article's models, as the registry says a CPU run times
    convergence = [r for r in data["records"] if r["kind"] == "convergence"]
    assert {(r["model"], r["seed"]) for r in convergence} == {(m, s) for m in timed for s in range(3)}
    assert all(r["converged"] and r["quick"] for r in convergence)
    assert (tmp_path / "report" / "convergence.png").exists()
    assert {r["model"] for r in data["records"] if r["kind"] == "timing"} == timed
    verdicts = [r for r in data["records"] if r["kind"] == "conformance"]
    assert verdicts and all(r["passed"] for r in verdicts), [r for r in verdicts if not r["passed"]]


def test_the_plan_marks_the_steps_that_run_on_the_worker_pool():
    from suite.cases.models import CASES
    from suite.conformance.sources import VERDICT_SOURCES
    from suite.runner import default_timing_api, plan

    steps = plan(["cpu"], CASES.select(["speech_cnn"]), False, VERDICT_SOURCES, default_timing_api())
    on_pool = {(s.kind, s.context.get("source") or s.context.get("setup") or s.context.get("limit"))
               for s in steps if s.uses_worker_pool}
    assert on_pool == {("conformance", "suite.conformance.parallel.equivalence:verdicts"),
                       ("conformance", "suite.conformance.parallel.resume:verdicts"), ("limits", "collectives")}
    # DDP timings start their pools in the fresh worker processes that time them, not in the run's
    assert ("timing", "cpu-ddp") in {(s.kind, s.context.get("setup")) for s in steps}


def test_a_quick_plan_leaves_the_pool_starts_and_the_training_runs_to_full_runs(capsys):
    from suite.runner import make_plan

    def kinds(quick, **options):
        steps = make_plan(device_request="cpu", model_names=["speech_cnn"], quick=quick, **options)[2]
        return {(s.kind, s.context.get("setup") or s.context.get("limit")) for s in steps}

    full, quick = kinds(False, convergence=True), kinds(True)
    left_out = {("limits", "collectives"), ("timing", "cpu-ddp"), ("timing", "cpu-compile"), ("convergence", None)}
    assert left_out <= full and not left_out & quick and ("timing", "cpu") in quick
    assert ("limits", "collectives") in kinds(True, limit_names=["collectives"])  # asked for by name
    assert main(["run", "--quick", "--checks", "ops,nope", "--dry-run"]) == 2
    assert "unknown check source 'nope'" in capsys.readouterr().err
    assert main(["run", "--quick", "--processes", "1", "--dry-run"]) == 2
    assert "--processes must be at least 2" in capsys.readouterr().err
    main(["run", "--device", "cpu", "--models", "speech_cnn", "--quick", "--processes", "5", "--dry-run"])
    assert "(process 5 of 5)" in capsys.readouterr().out
    # the CLI trains in full runs only, unless told otherwise
    for args, trains in ((["--quick"], False), ([], True), (["--quick", "--convergence"], True),
                         (["--no-convergence"], False)):
        assert main(["run", "--device", "cpu", "--models", "speech_cnn", "--dry-run", *args]) == 0
        assert ("convergence speech_cnn" in capsys.readouterr().out) is trains, args


# Each is a run started and stopped, about 10 s, by tests/stop_a_run.py, launched when collection
# ends: the default run keeps Ctrl-C, `slow` a kill too.
def _stopped(signal_name):
    return pytest.mark.launch([sys.executable, str(Path(__file__).with_name("stop_a_run.py")), signal_name, "{dir}"])


@pytest.mark.parametrize("status", [pytest.param("interrupted", marks=_stopped("SIGINT"), id="ctrl-c"),
                                    pytest.param("running", marks=[_stopped("SIGKILL"), pytest.mark.slow], id="crash")])
def test_a_run_stopped_midway_keeps_every_finished_record(launched, status):
    returncode, output = launched.wait(timeout=300)
    assert returncode == 0, output
    stopped = json.loads(output.strip().splitlines()[-1])
    stderr = (launched.directory / "stderr.txt").read_text()
    assert stopped["written"], f"no record written in 180 s:\n{stderr}"
    assert stopped["running"], "the run finished before it could be stopped"
    assert not stopped["leftovers"], f"processes left behind: {stopped['leftovers']}"
    out = launched.directory / "results"
    data = results.load(only_file(out))
    assert data["status"] == status and len(data["records"]) >= 1
    assert not (launched.directory / "report").exists()
    if status == "interrupted":
        assert stopped["returncode"] == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        assert [p.name for p in out.iterdir()] == [only_file(out).name]  # no temp file left


def test_an_unknown_model_is_a_one_line_error(capsys, tmp_path):
    assert main(["run", "--models", "speech_cnn,resnet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'resnet'" in err
    assert not list(tmp_path.iterdir())  # nothing started, no empty results file


def test_an_absent_device_is_a_one_line_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path needs a machine without it")
    assert main(["run", "--device", "cuda", "--out", str(tmp_path)]) == 2  # `python -m suite`'s: test_cli.py
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device 'cuda' requested but unavailable" in err
    assert list(tmp_path.iterdir()) == []


def crashing_source(device, quick):
    yield {"suite": "run-test", "case": "first", "check": "ok", "passed": True, "detail": "", "seconds": 0.0}
    raise RuntimeError("checker bug")


NO_TIMINGS = TimingApi(open_worker=None, calibrate=lambda device, quick: {"flops_per_s": 1.0},
                       iter_setups=lambda devices, quick, models: [])


def test_a_crashing_checker_becomes_an_error_record_and_the_run_goes_on(tmp_path, tables_only):
    stream = io.StringIO()
    path = run_suite(device_request="cpu", quick=True, out_dir=tmp_path / "r", report_dir=tmp_path / "report",
                     verdict_sources=[VerdictSource(crashing_source)] * 2, timing=NO_TIMINGS, stream=stream)
    data = results.load(path)
    assert data["status"] == "complete"
    assert [r["kind"] for r in data["records"]] == ["conformance", "error", "conformance", "error"]
    assert "RuntimeError: checker bug" in data["records"][1]["detail"]
    assert "error in conformance" in stream.getvalue()
    assert "FAIL" in (tmp_path / "report" / "report.md").read_text()  # a crash counts as a failed check


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_estimates_time_left_per_kind_of_step():
    clock = FakeClock()
    progress = Progress(["conformance", "timing", "timing", "timing"], stream=io.StringIO(), clock=clock)
    progress.start("conformance", "c")
    clock.now = 1.0
    progress.finish()
    progress.start("timing", "t1")
    clock.now = 11.0
    progress.finish()
    assert progress.estimate_left() == pytest.approx(20.0)  # two timings left at 10 s each


def test_a_kind_not_yet_started_counts_the_plans_estimates_not_other_kinds_durations():
    clock = FakeClock()
    progress = Progress(["timing", "timing", "convergence"], stream=io.StringIO(), clock=clock,
                        estimates=[2.0, 2.0, 60.0])
    assert progress.estimate_left() == pytest.approx(64.0)
    progress.start("timing", "t1")
    clock.now = 3.0
    progress.finish()
    assert progress.estimate_left() == pytest.approx(3.0 + 60.0)  # the timing as measured, the rest as planned


def test_progress_scales_a_kinds_estimates_by_its_finished_steps_and_shares_lanes():
    """Conformance sources differ tenfold, so the first one's duration says how fast the machine
    is, not how long the next takes; two that share lanes count half each, in whatever order they end."""
    clock = FakeClock()
    progress = Progress(["conformance"] * 4 + ["timing"], stream=io.StringIO(), clock=clock,
                        estimates=[10.0, 20.0, 200.0, 100.0, 5.0], lanes=[1, 2, 2, 2, 1])
    assert progress.estimate_left() == pytest.approx(10.0 + 160.0 + 5.0)
    progress.start("conformance", "pooled", 0)
    clock.now = 20.0  # twice its estimate: this machine is slow for checks
    progress.finish()
    assert progress.estimate_left() == pytest.approx(2 * 160.0 + 5.0)
    progress.start("conformance", "ops", 3)
    clock.now = 30.0
    progress.finish_elsewhere("conformance", "functions", 40.0, 1)  # its estimate was 20
    assert progress.estimate_left() == pytest.approx(60.0 / 30.0 * 150.0 - 10.0 + 5.0)
    clock.now = 200.0
    progress.finish()  # the ops ended before the longer compile step, planned before them
    assert progress.unfinished == {2, 4}


def test_the_plans_lanes_are_shared_by_runs_of_steps_that_run_beside():
    from suite.runner import PlanStep, shared_lanes

    def step(kind, pooled=False):
        return PlanStep(kind, kind, lambda: iter(()), {}, 1.0, pool_key=("p",) if pooled else None,
                        task=("m:f", ()))

    steps = [step("limits"), step("conformance", pooled=True), step("conformance"), step("conformance"),
             step("timing"), step("conformance")]
    assert shared_lanes(steps, 2) == [1, 1, 2, 2, 1, 1]
    assert shared_lanes(steps, 1) == [1] * 6


def test_progress_is_plain_lines_in_a_pipe_and_a_redrawn_bar_on_a_terminal():
    pipe, terminal = io.StringIO(), Terminal()
    for stream in (pipe, terminal):
        progress = Progress(["timing", "timing"], stream=stream, clock=FakeClock())
        progress.start("timing", "speech_cnn train")
        progress.finish()
        progress.start("timing", "speech_cnn eval")
        progress.finish()
        progress.close("done")
    assert "\r" not in pipe.getvalue() and pipe.getvalue().splitlines()[0].startswith("[1/2] speech_cnn train")
    assert "\r\033[K[" in terminal.getvalue() and "#" in terminal.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("how, outcome", [("segv", "crash"), ("abort", "crash"), ("hang", "timeout")])
def test_a_run_with_a_broken_kernel_finishes_every_step_and_names_it(tmp_path, monkeypatch, how, outcome):
    """The op sweep meets aten::erf planted to crash or hang (tests/broken_kernels.py) in every
    process: erf's verdicts say so, and everything after it still runs (suite.isolation)."""
    tests = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TORCHSUITE_IMPORT", "broken_kernels")
    monkeypatch.setenv("BROKEN_KERNEL", f"erf:{how}")
    proc = run_cli("--device", "cpu", "--models", "speech_cnn", "--quick", "--checks", "autograd,ops",
                   "--limits", "launch_latency", "--case-timeout", "15", "--out", str(tmp_path / "results"),
                   "--report-dir", str(tmp_path / "report"), timeout=540)
    assert proc.returncode == 1, proc.stderr  # not as declared, never a signal
    data = results.load(only_file(tmp_path / "results"))
    assert data["status"] == "complete"
    lost = [r for r in data["records"] if r.get("outcome") == outcome]
    assert {(r["case"], r["check"]) for r in lost} == {
        ("erf", f"{check} {dtype}") for check in ("forward", "backward") for dtype in ("float32", "bfloat16")}
    assert all(r["passed"] is False for r in lost)
    assert len([r for r in data["records"] if r.get("suite") == "ops" and r.get("case") == "exp"]) == 4
    assert {r["mode"] for r in data["records"] if r["kind"] == "timing"} == {"train", "eval"}  # the steps after it
    assert "erf" in (tmp_path / "report" / "report.md").read_text().split("## Crashes, hangs and out-of-memory")[1]
