import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest


def pytest_generate_tests(metafunc):
    """`model_spec`: each of the article's models, in turn; `workload_spec`: each standard
    workload's mini config. Imported here, at collection, so that this file loads without torch
    and pytest_configure below runs while torch is still loading."""
    selections = {"model_spec": lambda models: models.article_models(),
                  "workload_spec": lambda models: models.standard_models("mini")}
    for fixture, select in selections.items():
        if fixture in metafunc.fixturenames:
            from suite.cases import models

            names = select(models)
            metafunc.parametrize(fixture, [models.CASES.get(name) for name in names], ids=names)


# -- figures timed in this process: one attempt -----------------------------------------------------
#
# A timing that saw other processes busy (contended) waits for a quiet moment and is measured again.
# In a test run the busy processes are the run's own launches and pools, and no test here asks how
# fast anything is: each wait would be for nothing (16 s of the first pytest-benchmark test beside
# the launched quick run). Figures timed in this process get one attempt; the retry is
# tests/test_trust.py's, on planted contention, and the processes the tests start keep the rule.

@pytest.fixture(scope="session", autouse=True)
def _one_timing_attempt():
    from suite.timing import options

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(options, "ATTEMPTS", 1)
        patch.setattr(options, "QUICK_ATTEMPTS", 1)
        yield


# -- one torch thread in this process -------------------------------------------------------------
#
# The launches below and the pools keep the other core busy. A parallel region on two threads then
# waits for a core that is not free: measured beside a busy process, a compile check took 9.9 s on
# two threads and 7.6 s on one (6.7 s on two with the core free). No test here asks how fast this
# process is; the thread tests set their own counts and put this one back. The processes the tests
# start keep torch's default.

@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- reports without their pictures ------------------------------------------------------------
#
# A report draws four matplotlib figures (suite.report.plots): 0.6 s a report on 2 cores, 15 s of
# this process over the default run, nearly all of it in tests that read only the report's tables
# and text. Those take `tables_only`, and the report is written without its PNGs (its HTML embeds
# the pictures that exist). The tests that look at the pictures draw them: test_report.py's marked
# `draws_plots`, the launched `torchsuite run` of test_run.py, the fleet's and convergence's own.

def no_plots(*args, **kwargs) -> list:
    """suite.report.plots.write_plots that draws nothing."""
    return []


@pytest.fixture
def tables_only(monkeypatch):
    from suite.report import plots

    monkeypatch.setattr(plots, "write_plots", no_plots)


# -- one real quick run, which the report's and compare's tests share ----------------------------

def two_verdicts(device, quick):
    """A conformance source that passes one check and fails one: the report must show both."""
    yield {"suite": "report-test", "case": "identity", "check": "equal", "passed": True,
           "detail": "", "seconds": 0.0}
    yield {"suite": "report-test", "case": "<script>alert(1)</script>", "check": "equal",
           "passed": False, "detail": "max abs diff 1e-3 & <more>", "seconds": 0.0}


def quick_run(root: Path, name: str, verdict_sources=()) -> Path:
    """A real quick run of speech_cnn on this machine, named "alpha", with two processes a figure
    (the run's quick plan takes three): real process data, at less cost. No limits (test_limits.py's)."""
    import io
    from dataclasses import replace

    from suite.runner import default_timing_api, run_suite

    return run_suite(device_request="cpu", model_names=["speech_cnn"], quick=True, out_dir=root / name,
                     report_dir=root / f"{name}-report", machine_name="alpha", verdict_sources=list(verdict_sources),
                     stream=io.StringIO(), timing=replace(default_timing_api(), processes=lambda quick: 2,
                                                          measure_limit=None, iter_setups=quick_setups_and_ddp))


def quick_setups_and_ddp(devices, quick, models):
    """The quick plan's figures and the CPU DDP figure of a full run (its smallest world size, quick
    rules): the report's and compare's tests need a multi-process figure."""
    from suite.timing.plan import iter_setups

    ddp = [case for case in iter_setups(devices, False, models)
           if case.kwargs["setup"] == "cpu-ddp" and case.kwargs["world_size"] == 2]
    return [*iter_setups(devices, quick, models), *(case._replace(kwargs={**case.kwargs, "quick": quick}) for case in ddp)]


@pytest.fixture
def make_quick_run():
    """quick_run itself, for a test that needs a run of its own."""
    return quick_run


# Its run (17 s alone, 50 s beside the tests) in an interpreter of its own, launched when collection
# ends (below) if a test needs it, first in the line of launched commands.
_REAL_RUN = "real_run"
_REAL_RUN_SCRIPT = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from conftest import no_plots, quick_run, two_verdicts
from suite.conformance.sources import VerdictSource
from suite.report import plots

plots.write_plots = no_plots  # its report is read for its text only (tables_only)
print(quick_run(Path(sys.argv[2]), "results", [VerdictSource(two_verdicts)]))
"""


@pytest.fixture(scope="session")
def real_run(request) -> Path:
    """The results file of one real quick run (quick_run) with two_verdicts' checks."""
    from suite import results

    returncode, output = request.session.stash[_LAUNCHES][_REAL_RUN].wait(timeout=540)
    assert returncode == 0, output
    path = Path(output.strip().splitlines()[-1])
    assert any(r["kind"] == "timing" for r in results.load(path)["records"])
    return path


# -- tests that launch their own interpreters, started early -------------------------------------
#
# torchrun with its workers, a script that is sent Ctrl-C, a whole quick run: each spends seconds
# importing torch, mostly on one core. A test marked `launch(command, env=None)` has its command
# started in the background from the end of collection on, in a session of its own with its
# output in a file, so those seconds run on the core the tests before it leave idle. The test
# reads it through the `launched` fixture. The commands (and the shared quick run, real_run) run
# one at a time, in the order their tests come, the ones marked `early` (the long ones) first (all at
# once, they crowded the first tests and one another). A test that reaches its command before its
# turn starts it there and then, and while it waits, the next command in line starts too
# (_start_next). The tests that read them run last (pytest_collection_modifyitems). That line of
# commands ends a run: the long ones go first so that what is left when this process runs out of
# tests is short commands, which it starts two at a time.
#
# Tests whose markers name the same `share` run one command between them: the first one's command
# followed by every one's `args`, in their order (one interpreter, one import of torch, one
# inductor vector-ISA check, instead of one per test).

_LAUNCHES = pytest.StashKey[dict]()


class Launch:
    """A command started for a test, in a directory of its own (`directory`, which "{dir}" in the
    command's arguments names), its stdout and stderr together in `log`."""

    def __init__(self, command: list[str], env: dict | None = None, early: bool = False):
        self.early = early  # first in line
        self.directory = Path(tempfile.mkdtemp(prefix="torchsuite-launch-"))
        self.log = self.directory / "output.txt"
        self.command = [arg.replace("{dir}", str(self.directory)) for arg in command]
        self.env, self.proc, self.stopped = {**os.environ, **(env or {})}, None, False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the command, unless it runs already or was stopped."""
        with self._lock:
            if self.proc is None and not self.stopped:
                with open(self.log, "w") as out:
                    self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, text=True,
                                                 start_new_session=True, env=self.env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> tuple[int, str]:
        """(exit status, stdout and stderr together). Past `timeout` the command is stopped and
        the test fails; so is it when the wait itself is stopped (pytest-timeout, Ctrl-C)."""
        self.start()  # before its turn: now
        if self.proc.poll() is None:  # this process waits: the next command in line takes its core meanwhile
            _start_next(after=self)
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{shlex.join(self.command)[:120]} did not finish in {timeout:g} s, several "
                        f"times what it needs: it hung. Its output:\n{self.log.read_text()}")
        except BaseException:
            self.stop()
            raise
        return returncode, self.log.read_text()

    def stop(self) -> None:
        """End the whole session made for it: the command and whatever it left running (and never
        start it, if it has not begun)."""
        with self._lock:
            self.stopped = True
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:  # nothing left in its process group
                return
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# pytest rewrites the asserts of every module of a distribution that registers a pytest plugin:
# all of suite (torchsuite's plugin, suite.pytest_plugin) and all of hypothesis (which op_db
# imports), 190 modules parsed and compiled again in every run (PYTHONDONTWRITEBYTECODE keeps no
# cache), 2 s of this process. Their asserts are not what these tests check; the test files' are.
_NOT_REWRITTEN = ("suite", "hypothesis")


def _rewrite_only_the_tests(config) -> None:
    marked = getattr(config.pluginmanager.rewrite_hook, "_must_rewrite", None)  # pytest's own set
    if isinstance(marked, set):
        marked.difference_update(_NOT_REWRITTEN)


def pytest_configure(config):
    _rewrite_only_the_tests(config)
    config.addinivalue_line(
        "markers", "draws_plots: a test of tests/test_report.py that looks at the report's PNGs, which "
                   "the others there leave out (tables_only)")
    config.addinivalue_line(
        "markers", "vec_isa: the test uses inductor's check of the CPU's vector instruction sets, which "
                   "runs on a thread from the end of collection; the test waits for it")
    config.addinivalue_line(
        "markers", "launch(command, env=None, share=None, args=(), early=False): the test launches its own interpreters; "
                   "the command starts when collection ends ({dir} in it: a directory of its own), the "
                   "test reads it through `launched`; tests of one `share` run one command, with all their args")
    if _whole_suite_with_distributed_tests(config):
        _start_fork_server()


# The `distributed` tests run on suite.distributed's pools, whose fork server spends seconds
# importing torch. The default run (`python -m pytest`: whole directories, the -m of pyproject's
# addopts, which admits those tests) starts it here, before collection, while pytest imports
# torch on the other core. Any other run starts it once collection has selected a distributed
# test (pytest_collection_finish: session.items is then exactly what -m and -k left), so no -m
# expression is ever evaluated here.

def _start_fork_server() -> None:
    from suite.distributed.pool import start_fork_server

    start_fork_server()


def _whole_suite_with_distributed_tests(config) -> bool:
    if config.getoption("collectonly") or config.getoption("keyword"):
        return False
    if not all(os.path.isdir(arg) for arg in config.args):  # files or node ids: wait for collection
        return False
    addopts = config.getini("addopts")  # pyproject's, split into arguments: [..., "-m", "not slow", ...]
    default_markexpr = addopts[addopts.index("-m") + 1] if "-m" in addopts else ""
    return config.getoption("markexpr") == default_markexpr


# `slow` tests are long work by definition (a whole quick run, asv over two commits): they get
# this limit instead of pyproject's `timeout`, unless they carry a timeout marker of their own.
SLOW_TIMEOUT_S = 1200


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    # The tests that read a launched command (real_run's too) come last, in their order: their
    # commands run one after another on the core this process leaves, while every other test runs
    # here, and are done (or nearly) when their tests come. In their files' order, a test waited for
    # its command (compare's first test 6 to 11 s for real_run), and the last command ended a minute
    # before the run did, leaving a core idle.
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("launch") is not None
                      or _REAL_RUN in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session):
    if session.config.getoption("collectonly"):
        return
    if any(item.get_closest_marker("distributed") and not item.get_closest_marker("skip")
           for item in session.items):
        _start_fork_server()  # a no-op when it runs already
    launches = session.stash.setdefault(_LAUNCHES, {})
    markers = {item: item.get_closest_marker("launch") for item in session.items
               if item.get_closest_marker("launch") and not item.get_closest_marker("skip")}
    shared_args: dict[str, list[str]] = {}
    for marker in markers.values():
        if marker.kwargs.get("share"):
            shared_args.setdefault(marker.kwargs["share"], []).extend(marker.kwargs.get("args", ()))
    for item in session.items:  # in the order the tests run
        if _REAL_RUN in getattr(item, "fixturenames", ()) and _REAL_RUN not in launches:
            launches[_REAL_RUN] = Launch([sys.executable, "-c", _REAL_RUN_SCRIPT, str(Path(__file__).parent), "{dir}"],
                                         early=True)
        marker = markers.get(item)
        if marker is not None and _launch_key(item, marker) not in launches:
            share = marker.kwargs.get("share")
            launches[_launch_key(item, marker)] = Launch([*marker.args[0], *shared_args.get(share, ())],
                                                         marker.kwargs.get("env"), marker.kwargs.get("early", False))
    _IN_LINE[:] = sorted(launches.values(), key=lambda launch: not launch.early)  # stable: test order otherwise
    threading.Thread(target=_in_turn, args=(list(_IN_LINE),), daemon=True).start()
    if any(item.get_closest_marker("vec_isa") and not item.get_closest_marker("skip") for item in session.items):
        from suite.vec_isa import start_vec_isa_probe

        _VEC_ISA_WAIT.append(start_vec_isa_probe())


# -- inductor's vector-ISA check, off the tests' path ---------------------------------------------
#
# A process's first inductor compile starts with it (suite.vec_isa): a compiler and an interpreter
# that imports torch per instruction set, 13 s here, nearly all of it waiting on those processes.
# Started on a thread when collection ends, it overlaps the tests before the first compile, and a
# test marked `vec_isa` waits for it (it sets TORCHINDUCTOR_VEC_ISA_OK in this process when every
# set passed, as a run does).

_VEC_ISA_WAIT: list = []  # what waits for the check, once it started


def pytest_runtest_setup(item):
    if item.get_closest_marker("vec_isa") and _VEC_ISA_WAIT:
        _VEC_ISA_WAIT[0]()


@pytest.fixture
def vec_isa_check_done():
    """For a test that replaces what the check uses: it waits for the check, if one was started."""
    if _VEC_ISA_WAIT:
        _VEC_ISA_WAIT[0]()


_IN_LINE: list[Launch] = []  # the session's launches, in their turns


def _start_next(after: Launch) -> None:
    """Start the first command still waiting for its turn, but `after`'s. The tests that read the
    commands come last: by then this process waits on them, and the commands left need not wait
    for one another (in turn, the last two ran one after the other for 20 s, with a core idle)."""
    waiting = next((launch for launch in _IN_LINE
                    if launch.proc is None and not launch.stopped and launch is not after), None)
    if waiting is not None:
        waiting.start()


def _in_turn(launches: list[Launch]) -> None:
    for launch in launches:
        launch.start()
        if launch.proc is not None:
            launch.proc.wait()


def pytest_sessionfinish(session):
    for launch in session.stash.get(_LAUNCHES, {}).values():
        launch.stop()
        shutil.rmtree(launch.directory, ignore_errors=True)


def _launch_key(item, marker) -> str:
    return marker.kwargs.get("share") or item.nodeid


@pytest.fixture
def launched(request):
    marker = request.node.get_closest_marker("launch")
    launch = marker and request.session.stash.get(_LAUNCHES, {}).get(_launch_key(request.node, marker))
    if launch is None:
        pytest.fail("the launched fixture needs the test to be marked launch(command)")
    yield launch
    if not marker.kwargs.get("share"):  # a shared one's other tests still read it; the session's end stops it
        launch.stop()  # whatever the command left running, whether the test passed or not


def _processes_left(session_id: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        listing = subprocess.run(["ps", "-s", str(session_id), "-o", "pid=,cmd="],
                                 capture_output=True, text=True).stdout
        alive = [line.strip()[:100] for line in listing.splitlines() if line.strip()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture
def processes_left():
    """processes_left(session_id, timeout=30.0): what still runs in that session (one made with
    start_new_session) after waiting up to `timeout` s for it to empty; anything there is a leak.
    The wait ends as soon as the session is empty: the timeout only bounds a leak's cost."""
    return lambda session_id, timeout=30.0: _processes_left(session_id, timeout)
