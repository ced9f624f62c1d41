"""The reusable worker pool: results in rank order, and failures that stay contained.

A worker that dies, raises or hangs fails that call with a one-line WorkerError within its
timeout, leaves no process behind, and the next call runs on a fresh group.
"""
import multiprocessing
import os
import time

import pytest

from suite.distributed import WorkerError, WorkerPool, get_pool
from suite.distributed import selfcheck
from suite.errors import SuiteError

pytestmark = pytest.mark.distributed

# Deadlines and elapsed-time bounds here only catch a hang: each is minutes above what the
# call needs even on a loaded machine, and no test asserts how fast anything is.
HANG_S = 120


def _gone(pid: int) -> bool:
    """No such process, or only a zombie entry its parent has yet to reap (no longer running)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _assert_no_worker_left(pids):
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    deadline = time.monotonic() + 30  # reaping takes moments; only a leak waits it out
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids), [pid for pid in pids if not _gone(pid)]


@pytest.fixture
def pool():
    """The shared 2-rank pool, the one the DDP cases use: failures here must not spoil it."""
    return get_pool(2)


def test_run_returns_every_ranks_value_in_rank_order(pool):
    reports = pool.run(selfcheck.rank_report)
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["rank_sum"] == 1.0 for r in reports)
    assert all(r["threads"] == 1 for r in reports)  # 2 cores: one thread per rank
    assert len({r["pid"] for r in reports}) == 2 and os.getpid() not in {r["pid"] for r in reports}


def test_get_pool_shares_one_pool_per_configuration():
    assert get_pool(2) is get_pool(2, "gloo", "cpu")
    assert get_pool(3) is not get_pool(2)


def test_a_killed_worker_fails_its_call_and_the_next_call_passes(pool):
    old = [r["pid"] for r in pool.run(selfcheck.rank_report)]
    with pytest.raises(WorkerError) as failure:
        pool.run(selfcheck.kill_rank, timeout=HANG_S)
    reason = str(failure.value)  # naming the death, not "timed out": seen before the deadline
    assert "\n" not in reason and "rank 1 died from signal SIGKILL" in reason
    assert isinstance(failure.value, SuiteError)
    _assert_no_worker_left(old)
    fresh = pool.run(selfcheck.rank_report)
    assert [r["rank_sum"] for r in fresh] == [1.0, 1.0]
    assert not {r["pid"] for r in fresh} & set(old)


def test_a_hung_worker_times_out_with_a_one_line_reason(pool):
    old = pool.pids() or [r["pid"] for r in pool.run(selfcheck.rank_report)]
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"^timed out after 0.5 s running .*hang_rank; "
                                          r"rank\(s\) 0, 1 did not answer$"):
        pool.run(selfcheck.hang_rank, 1, 3 * HANG_S, timeout=0.5)  # rank 1 sleeps 360 s
    # the deadline, then terminate and kill (2 s grace each): a pool that waited for the
    # sleeper would take 360 s; the bound catches only that
    assert time.monotonic() - start < HANG_S
    _assert_no_worker_left(old)
    assert [r["rank"] for r in pool.run(selfcheck.rank_report)] == [0, 1]


def test_an_exception_in_a_worker_is_one_line_with_the_traceback_kept(pool):
    with pytest.raises(WorkerError) as failure:
        pool.run(selfcheck.raise_on_rank)
    assert str(failure.value) == ("rank 1 raised while running suite.distributed.selfcheck."
                                  "raise_on_rank: ValueError: rank 1 was told to fail")
    assert "second line" in failure.value.details and "Traceback" in failure.value.details
    assert len(pool.run(selfcheck.rank_report)) == 2


def test_an_error_waits_for_a_slow_peer_only_until_it_answers(pool, monkeypatch):
    # Rank 1's error may be the echo of a peer's death, so the pool watches the silent peer for
    # up to _ECHO_WINDOW_S; a peer that answers instead ends that wait at once.
    from suite.distributed import pool as pool_module

    monkeypatch.setattr(pool_module, "_ECHO_WINDOW_S", 3.0 * HANG_S)
    pool.start()
    start = time.monotonic()
    with pytest.raises(WorkerError, match="^rank 1 raised while running"):
        pool.run(selfcheck.raise_on_rank, 1, 0.2)
    # rank 0 answered after 0.2 s; a pool that waited out the window would take 360 s
    assert time.monotonic() - start < HANG_S


def test_a_group_that_cannot_start_is_a_worker_error_and_leaves_nothing():
    before = set(multiprocessing.active_children())
    with pytest.raises(WorkerError, match=r"^rank [01] raised while starting the process group: .*no-such-backend"):
        with WorkerPool(2, backend="no-such-backend", timeout=HANG_S):
            pass
    assert set(multiprocessing.active_children()) <= before


def test_a_closed_pool_leaves_no_process_and_two_pools_get_their_own_ports():
    with WorkerPool(2, timeout=HANG_S) as first, WorkerPool(2, timeout=HANG_S) as second:
        assert [r["rank_sum"] for r in first.run(selfcheck.rank_report)] == [1.0, 1.0]
        assert [r["rank_sum"] for r in second.run(selfcheck.rank_report)] == [1.0, 1.0]
        pids = first.pids() + second.pids()
    _assert_no_worker_left(pids)


def test_tensors_travel_as_bytes_not_through_the_fd_sharing_thread(pool):
    # multiprocessing's fd-sharing thread prints a traceback when a worker is torn down
    # mid-transfer (a Ctrl-C), so the pool must never start it; nothing else in the suite does.
    import sys

    import torch

    results = pool.run(selfcheck.scaled, torch.arange(3.0))
    assert [r.tolist() for r in results] == [[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]]
    sharer = sys.modules.get("multiprocessing.resource_sharer")
    assert sharer is None or sharer._resource_sharer._listener is None
