"""A test that hangs fails at its time limit (pytest-timeout, configured in pyproject.toml), the
children it started are killed, and the run goes on to the next test."""
import subprocess
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

pytest_plugins = ["pytester"]

# Both ways this repository's tests start children: subprocess.run, and Popen with try/finally.
# Each hangs on a child; 1 s is ample for the child to start and note its pid.
HANGING_TESTS = """
import subprocess

import pytest


@pytest.mark.timeout(1)
def test_hangs_in_subprocess_run():
    subprocess.run(["sh", "-c", "echo $$ > run.pid; exec sleep 600"])


@pytest.mark.timeout(1)
def test_hangs_waiting_for_its_child():
    child = subprocess.Popen(["sleep", "600"])
    with open("popen.pid", "w") as out:
        out.write(str(child.pid))
    try:
        child.wait()
    finally:
        child.kill()
        child.wait()


def test_the_next_test_runs():
    pass
"""


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is dead: it only waits to be reaped)."""
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def test_a_hung_test_fails_at_its_limit_its_children_are_killed_and_the_run_goes_on(pytester):
    test_file = pytester.makepyfile(HANGING_TESTS)
    # The project's own pytest settings (timeout_method above all), in a directory of its own.
    result = pytester.runpytest_subprocess(str(test_file), "-c", str(PYPROJECT), "--rootdir", str(pytester.path),
                                           timeout=120)
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["*Failed: Timeout (>1.0s) from pytest-timeout*"])
    for pid_file in ("run.pid", "popen.pid"):
        pid = int((pytester.path / pid_file).read_text())
        assert not _running(pid), f"{pid_file}: the hung test's child {pid} still runs"
