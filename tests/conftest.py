import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest


def pytest_generate_tests(metafunc):
    """`model_spec`: each registered model, in turn. Imported here, at collection, so that this
    file loads without torch and pytest_configure below runs while torch is still loading."""
    if "model_spec" in metafunc.fixturenames:
        from suite.cases.models import CASES as MODELS

        metafunc.parametrize("model_spec", [MODELS.get(name) for name in MODELS.names()],
                             ids=MODELS.names())


# -- tests that launch their own interpreters, started early -------------------------------------
#
# torchrun with its workers, or a script that is sent Ctrl-C, spends seconds importing torch,
# mostly on one core. A test marked `launch(command, env=None)` has its command started as soon
# as collection ends, in a session of its own with its output in a file, so those seconds
# overlap the tests that run before it. The test reads it through the `launched` fixture.

_LAUNCHES = pytest.StashKey[dict]()


class Launch:
    def __init__(self, command: list[str], log: Path, env: dict | None = None):
        self.command, self.log = command, log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True,
                                         start_new_session=True, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> tuple[int, str]:
        """(exit status, stdout and stderr together); fails the test when it runs past `timeout`."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{shlex.join(self.command)[:120]} did not finish in {timeout:g} s:\n"
                        f"{self.log.read_text()}")
        return returncode, self.log.read_text()

    def stop(self) -> None:
        """End the whole session made for it: the command and whatever it left running."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:  # nothing left in its process group
                return
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "launch(command, env=None): the test launches its own interpreters; the "
                   "command starts when collection ends, the test reads it through `launched`")
    if _may_select_distributed(config):
        # The plugin starts the pool's fork server once collection shows distributed tests;
        # this suite's own runs start it before collection, while one core is still idle.
        from suite.distributed.pool import start_fork_server

        start_fork_server()


def _may_select_distributed(config) -> bool:
    """Whether -m admits a test marked only `distributed` (a guess: -k and paths may not)."""
    if config.getoption("collectonly"):
        return False
    try:
        from _pytest.mark.expression import Expression

        return Expression.compile(config.option.markexpr or "distributed").evaluate(
            lambda name, **kwargs: name == "distributed" and not kwargs)
    except Exception:  # pytest's private expression API changed: leave it to the plugin
        return False


def pytest_collection_finish(session):
    if session.config.getoption("collectonly"):
        return
    launches = session.stash.setdefault(_LAUNCHES, {})
    for item in session.items:
        marker = item.get_closest_marker("launch")
        if marker is not None and not item.get_closest_marker("skip"):
            log_dir = Path(tempfile.mkdtemp(prefix="torchsuite-launch-"))
            launches[item.nodeid] = Launch(marker.args[0], log_dir / "output.txt", **marker.kwargs)


def pytest_sessionfinish(session):
    for launch in session.stash.get(_LAUNCHES, {}).values():
        launch.stop()
        shutil.rmtree(launch.log.parent, ignore_errors=True)


@pytest.fixture
def launched(request) -> Launch:
    launch = request.session.stash.get(_LAUNCHES, {}).get(request.node.nodeid)
    if launch is None:
        pytest.fail("the launched fixture needs the test to be marked launch(command)")
    return launch
