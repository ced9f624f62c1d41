"""Tests that launch their own Python interpreters: torchrun with its workers, a script that
is sent Ctrl-C while its pool starts, and one that exits without closing its pool.

Each interpreter spends seconds importing torch, so these tests carry the `launch` marker
rather than `distributed` (whose tests share this process's pools), and their commands start
as soon as collection ends (tests/conftest.py), overlapping the rest of the run. All of them
run in the default test run; `pytest -m launch` runs just these.
"""
import shlex
import socket
import sys

import pytest

TORCHRUN_CASES = ["mlp_sgd_momentum_w2", "mlp_sum_loss_w2", "mlp_uneven_inputs_join_w2"]
TWO_NODE_CASES = ["mlp_sgd_momentum_w2", "mlp_sum_loss_w2", "fsdp_mlp_w2", "fsdp_mlp_tied_weights_w2"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_nodes_command(cases: list[str]) -> list[str]:
    """Two torchrun agents, one process each, meeting through c10d rendezvous on 127.0.0.1:
    two nodes on one machine. The shell waits for both and fails when either does."""
    agent = (f"{shlex.quote(sys.executable)} -m torch.distributed.run --nnodes 2 --nproc-per-node 1 "
             f"--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{_free_port()} --rdzv-id two-nodes "
             f"-m suite.distributed --cases {','.join(cases)} --timeout 60")
    return ["bash", "-c", f"{agent} & first=$!; {agent}; second=$?; wait $first; exit $(( $? | second ))"]
# How long a test waits for its command: bounds that only catch a hang, and no test asserts how
# fast a command ran. This file alone runs in 14 s here, every command included; beside other
# tests on 2 cores the torchrun ones took 20 s. A stuck collective ends a torchrun command within
# its 60 s (--timeout); the bound catches the rest, such as the hang once seen after every
# verdict was printed. The test then stops the command and fails with its output.
TORCHRUN_TIMEOUT_S = 180
SCRIPT_TIMEOUT_S = 120


@pytest.mark.launch(
    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
     "-m", "suite.distributed", "--cases", ",".join(TORCHRUN_CASES), "--timeout", "60"],
    env={"OMP_NUM_THREADS": "1"})
def test_torchrun_launch_prints_one_passing_verdict_per_case(launched):
    returncode, output = launched.wait(timeout=TORCHRUN_TIMEOUT_S)
    assert returncode == 0, output
    lines = [line for line in output.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [line.split()[:2] for line in lines] == [["PASS", name] for name in TORCHRUN_CASES]
    assert all("(world size 2): as expected" in line and line.endswith("[node 0]") for line in lines)


@pytest.mark.launch(_two_nodes_command(TWO_NODE_CASES), env={"OMP_NUM_THREADS": "1"})
def test_two_torchrun_nodes_on_one_machine_both_report_every_case_as_expected(launched):
    returncode, output = launched.wait(timeout=TORCHRUN_TIMEOUT_S)
    assert returncode == 0, output
    for node in ("0", "1"):
        lines = [line for line in output.splitlines() if line.startswith(("PASS", "FAIL"))
                 and line.endswith(f"[node {node}]")]
        assert sorted(line.split()[1] for line in lines) == sorted(TWO_NODE_CASES), output
        assert all(line.startswith("PASS") and "(world size 2): as expected" in line for line in lines)


_CTRL_C_WHILE_STARTING = """
import os, signal, sys, threading
import torch.distributed  # so that the delay below falls inside start(), not in this import
from suite.distributed import WorkerPool

if __name__ == "__main__":
    # A shell that starts jobs in the background makes them ignore Ctrl-C: undo that here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pool = WorkerPool(2, timeout=30)
    # Ctrl-C while the first rank is being started (the fork server is still importing torch)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        pool.start()
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
"""


@pytest.mark.launch([sys.executable, "-c", _CTRL_C_WHILE_STARTING])
def test_ctrl_c_while_a_pool_starts_leaves_no_process(launched, processes_left):
    returncode, output = launched.wait(timeout=SCRIPT_TIMEOUT_S)
    assert returncode == 130, output  # interrupted inside start(), which takes seconds
    assert not (left := processes_left(launched.pid)), f"processes left behind: {left}"
    assert "Traceback" not in output


_POOL_LEFT_OPEN = """
import multiprocessing, time
from suite.distributed import WorkerPool, selfcheck

def finish_late():
    time.sleep(1)
    print("the program's own process finished", flush=True)

if __name__ == "__main__":
    pool = WorkerPool(2, timeout=30)
    print("rank sums", [r["rank_sum"] for r in pool.run(selfcheck.rank_report)], flush=True)
    multiprocessing.get_context("fork").Process(target=finish_late).start()
    # ...and exit without closing the pool or joining the process
"""


@pytest.mark.launch([sys.executable, "-c", _POOL_LEFT_OPEN])
def test_a_pool_left_open_is_closed_at_exit_leaving_no_process(launched, processes_left):
    # Its live workers once held the resource tracker's pipe open, and exit waited forever.
    # The program's own process, which multiprocessing joins at exit, still runs to its end.
    returncode, output = launched.wait(timeout=SCRIPT_TIMEOUT_S)
    assert returncode == 0, output
    assert "rank sums [1.0, 1.0]" in output
    assert "the program's own process finished" in output
    assert not (left := processes_left(launched.pid)), f"processes left behind: {left}"
    assert "Traceback" not in output
