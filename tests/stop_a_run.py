"""Start `torchsuite run --device cpu --quick` in DIRECTORY, send it SIGNAL once its first record
is written, and print what a test needs to judge the stop as one JSON line: whether the run was
still going when signalled, its exit status, and the processes left in its session. The run's
stderr is DIRECTORY/stderr.txt, its results DIRECTORY/results. tests/test_run.py launches this
(conftest's `launch` marker), so the run's seconds overlap the tests before it.

    python tests/stop_a_run.py SIGINT|SIGKILL DIRECTORY
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import _processes_left  # this file's directory is sys.path[0]


def record_count(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["records"])
    except (ValueError, KeyError):
        return 0  # created but not yet written: the run has only just begun


def main(signal_name: str, directory: Path) -> dict:
    out = directory / "results"
    # Its output goes to a file, not a pipe: nothing reads while this polls, and a full pipe would
    # stop the run.
    with open(directory / "stderr.txt", "w") as stderr_file:
        # A process started as a shell's background job has Ctrl-C ignored, and the run would
        # inherit that (a Python that starts with SIGINT ignored keeps it so): the run gets the default.
        proc = subprocess.Popen([sys.executable, "-m", "suite", "run", "--device", "cpu", "--quick", "--out",
                                 str(out), "--report-dir", str(directory / "report")],
                                stdout=subprocess.DEVNULL, stderr=stderr_file, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    outcome = {"written": False, "running": False}
    try:
        deadline = time.monotonic() + 180  # the first record takes seconds; minutes mean a hang
        while proc.poll() is None and time.monotonic() < deadline:
            files = list(out.glob("*.json")) if out.exists() else []
            if files and record_count(files[0]) >= 1:
                outcome["written"] = True
                break
            time.sleep(0.2)
        outcome["running"] = proc.poll() is None
        if outcome["written"] and outcome["running"]:
            proc.send_signal(getattr(signal, signal_name))
            proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        outcome["leftovers"] = _processes_left(proc.pid, timeout=30.0)
        if outcome["leftovers"]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the run's own session: only what this started
    return {**outcome, "returncode": proc.returncode}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
