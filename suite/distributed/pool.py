"""A pool of spawned workers that stay in one process group and run many calls.

Spawning a group costs seconds here, far more than a small case, so the suite starts one
group per (world size, backend, device) and sends it work. Every call has a deadline. When a
worker dies, raises or hangs, the call raises WorkerError with a one-line reason and the whole
group is torn down (its collectives can no longer be trusted); the next call starts a new one.
"""
from __future__ import annotations

import atexit
import itertools
import os
import signal
import threading
import time
import weakref
from contextlib import contextmanager
from multiprocessing.connection import wait

from suite.distributed.worker import receive, send
from suite.errors import SuiteError, one_line

_STORE_HOST = "127.0.0.1"
_GRACE_S = 2.0  # how long a terminated worker gets before it is killed
_ECHO_WINDOW_S = 2.0  # how long a peer's death may take to show after the error it caused
# Imported once by the fork server, so that each worker forked from it starts in milliseconds.
# DistributedDataParallel imports torch._dynamo when it is first built: 1.5 s a worker here.
_PRELOAD = ["torch", "torch.distributed", "torch.nn.parallel", "torch._dynamo",
            "torch.distributed.algorithms.join", "suite.distributed.worker"]


def default_start_method() -> str:
    """forkserver where the platform has it, else spawn.

    Both are safe with CUDA (the workers, not a parent that touched CUDA, initialise it). A
    spawned worker imports torch itself: about 4 s for a 2-process group on 2 cores. Workers
    forked from a server that imported torch once start a group in about 0.05 s, which is
    what lets a torn-down group be rebuilt for the next call at no real cost.
    """
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def start_fork_server() -> bool:
    """Start the fork server's imports now, in the background; True when it is (now) running.

    The first pool otherwise waits seconds for the server to import torch. Call this as soon
    as a run knows it will need a pool (the pytest plugin does, once it sees `distributed`
    tests selected), so those seconds overlap whatever the run does first.
    """
    if default_start_method() != "forkserver":
        return False
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    forkserver.ensure_running()
    return True


def wait_for_fork_server() -> None:
    """Return once the fork server has finished importing (it serves no fork before that).

    A timing that uses every core must not run beside the server's seconds of importing torch:
    `torchsuite run` starts the server early and waits here before its first timing.
    """
    if default_start_method() != "forkserver":
        return
    import multiprocessing

    probe = multiprocessing.get_context("forkserver").Process(target=os.getpid, name="torchsuite-fork-probe")
    probe.start()
    probe.join()


class WorkerError(SuiteError):
    """A call on the pool failed: a worker died, raised or did not answer in time.

    str() is one line; `details` holds the worker's traceback when there was one.
    """

    def __init__(self, reason: str, details: str = ""):
        super().__init__(reason)
        self.details = details


def _callable_name(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _exit_description(exitcode) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"died from signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"died from signal {-exitcode}"
    return f"exited with status {exitcode}"


class WorkerPool:
    """`world_size` worker processes in one torch.distributed group, reused across calls.

    `run(fn, *args)` calls module-level `fn(rank, world_size, *args)` on every rank and returns
    the results in rank order. Use it as a context manager, or `close()` it.
    """

    def __init__(self, world_size: int, backend: str = "gloo", device: str = "cpu",
                 timeout: float = 60.0, start_method: str | None = None):
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}")
        self.world_size, self.backend, self.device, self.timeout = world_size, backend, device, timeout
        self.start_method = start_method or default_start_method()
        self._processes: list = []
        self._conns: list = []
        self._store = None
        self._ready = False
        self._call_ids = itertools.count()
        self._lock = threading.Lock()  # one call at a time: ranks must see calls in one order
        _LIVE.add(self)  # closed at exit if nobody closed it

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> "WorkerPool":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pids(self) -> list[int]:
        """The workers' process ids (empty while no group is up)."""
        return [p.pid for p in self._processes]

    def spawn(self) -> None:
        """Start the workers without waiting for them; `start()` or the first `run()` waits."""
        with self._lock:
            self._spawn()

    def _spawn(self) -> None:
        if self._processes:
            return
        import datetime

        import torch.distributed as dist
        import torch.multiprocessing as mp

        from suite.distributed.worker import worker_main

        # The parent hosts the rendezvous store on a port the OS picks: no port is guessed,
        # and none can be taken by someone else between choosing and binding it.
        self._store = dist.TCPStore(_STORE_HOST, 0, None, True,
                                    datetime.timedelta(seconds=self.timeout),
                                    wait_for_workers=False)
        context = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            context.set_forkserver_preload(_PRELOAD)  # no effect once the server runs
        try:
            for rank in range(self.world_size):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=worker_main,
                    args=(rank, self.world_size, self.backend, self.device, _STORE_HOST,
                          self._store.port, self.timeout, child_end),
                    name=f"torchsuite-worker-{self.world_size}-{rank}", daemon=True)
                self._conns.append(parent_end)
                # Tracked before it starts: a Ctrl-C inside start() must not leave a rank behind.
                self._processes.append(process)
                with _sigint_deferred():  # else Ctrl-C mid-start leaves a rank we have no pid for
                    process.start()
                child_end.close()
        except BaseException:
            self._teardown(polite=False)  # the ranks already started would wait for the rest
            raise
        self._ready = False

    def start(self) -> None:
        """Start the workers and wait until every rank has joined the group."""
        with self._lock:
            self._ensure_ready()

    def close(self) -> None:
        """Stop the workers (politely, then by force) and wait for them; safe to call twice."""
        with self._lock:
            self._teardown(polite=True)

    # -- calls --------------------------------------------------------------------------------

    def run(self, fn, *args, timeout: float | None = None) -> list:
        """fn(rank, world_size, *args) on every rank; the results in rank order.

        Raises WorkerError (and tears the group down) when a rank raises, dies or does not
        answer within `timeout` seconds (the pool's timeout when None).
        """
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            self._ensure_ready()
            call_id = next(self._call_ids)
            for rank, conn in enumerate(self._conns):
                try:
                    send(conn, (call_id, fn, args))
                except (BrokenPipeError, EOFError, OSError) as error:
                    self._fail(f"could not send {_callable_name(fn)} to rank {rank}: {error}")
                except Exception as error:  # pickling: a lambda, a local function, a lock...
                    reason = (f"cannot send {_callable_name(fn)} to the workers: {one_line(error)} "
                              "(functions must be importable, defined at module level)")
                    if rank:  # earlier ranks already run it and would wait for this one
                        self._fail(reason)
                    raise WorkerError(reason) from None
            try:
                return self._collect(call_id, limit, f"running {_callable_name(fn)}")
            except WorkerError:
                raise
            except BaseException:  # Ctrl-C mid-call: the ranks are mid-collective, drop them
                self._teardown(polite=False)
                raise

    # -- internals ----------------------------------------------------------------------------

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        self._spawn()
        try:
            self._collect("ready", self.timeout, "starting the process group")
        except BaseException:  # Ctrl-C while ranks join: they would wait out their timeout
            self._teardown(polite=False)
            raise
        self._ready = True

    def _collect(self, expected_id, limit: float, doing: str) -> list:
        results: dict[int, object] = {}
        deadline = time.monotonic() + limit
        rank_of = {id(conn): rank for rank, conn in enumerate(self._conns)}
        rank_of_sentinel = {p.sentinel: rank for rank, p in enumerate(self._processes)}
        while len(results) < self.world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = [r for r in range(self.world_size) if r not in results]
                self._fail(f"timed out after {limit:g} s {doing}; "
                           f"rank(s) {', '.join(map(str, waiting))} did not answer")
            pending = [c for r, c in enumerate(self._conns) if r not in results]
            sentinels = [p.sentinel for r, p in enumerate(self._processes) if r not in results]
            for ready in wait(pending + sentinels, timeout=left):
                if ready in rank_of_sentinel:
                    rank = rank_of_sentinel[ready]
                    conn = self._conns[rank]
                    if conn.poll():  # it answered before it exited: read the answer first
                        continue
                    self._processes[rank].join(0.5)
                    self._fail(f"rank {rank} {_exit_description(self._processes[rank].exitcode)} "
                               f"while {doing}")
                rank = rank_of[id(ready)]
                try:
                    call_id, ok, payload = receive(ready)
                except (EOFError, OSError):
                    self._processes[rank].join(0.5)
                    self._fail(f"rank {rank} {_exit_description(self._processes[rank].exitcode)} "
                               f"while {doing}")
                if call_id != expected_id:
                    continue  # a late answer to a call that already failed
                if not ok:
                    reason, trace = payload
                    self._fail_with_cause(rank, f"raised while {doing}: {reason}", trace, doing,
                                          answered=set(results))
                results[rank] = payload
        return [results[rank] for rank in range(self.world_size)]

    def _fail_with_cause(self, rank: int, what: str, details: str, doing: str, answered: set):
        """A rank's error is often the echo of a peer's death (connection reset by peer):
        when a silent peer dies within moments, name that death, the cause worth reading.
        The wait ends as soon as every silent peer has either answered or died."""
        silent = {r for r in range(self.world_size) if r != rank and r not in answered}
        deadline = time.monotonic() + _ECHO_WINDOW_S
        while silent and (left := deadline - time.monotonic()) > 0:
            handles = {self._processes[r].sentinel: r for r in silent}
            handles.update({self._conns[r]: r for r in silent})
            for handle in wait(list(handles), timeout=left):
                peer = handles[handle]
                if peer not in silent:  # both its pipe and its sentinel were ready
                    continue
                silent.discard(peer)
                if self._has_answer(peer):  # it answered: alive, or it said why it failed
                    continue
                self._processes[peer].join(0.5)
                exitcode = self._processes[peer].exitcode
                if exitcode:
                    self._fail(f"rank {peer} {_exit_description(exitcode)} while {doing} "
                               f"(rank {rank} then {what})", details)
        self._fail(f"rank {rank} {what}", details)

    def _has_answer(self, rank: int) -> bool:
        """Whether the rank sent something; reads it (only used once the call has failed).
        A dead rank's pipe polls readable too, at end of file, so poll() alone cannot say."""
        conn = self._conns[rank]
        try:
            return conn.poll() and receive(conn) is not None
        except (EOFError, OSError):
            return False

    def _fail(self, reason: str, details: str = ""):
        self._teardown(polite=False)
        raise WorkerError(reason, details)

    def _teardown(self, polite: bool) -> None:
        if polite and self._ready:
            for conn in self._conns:
                try:
                    send(conn, None)
                except OSError:
                    pass
            for process in self._processes:
                process.join(_GRACE_S)
        started = [p for p in self._processes if p.pid is not None]
        for process in started:
            if process.is_alive():
                process.terminate()
        for process in started:
            process.join(_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()
        self._processes, self._conns = [], []
        self._store = None
        self._ready = False


@contextmanager
def _sigint_deferred():
    """Hold Ctrl-C back until the block ends, then deliver it.

    A signal mask cannot do this: torch's threads do not block SIGINT, the kernel hands it to
    one of them, and Python still raises in the main thread. So the handler itself waits.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, received[0])
        elif received and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


_LIVE: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()
_SHARED: dict[tuple, WorkerPool] = {}
_SHARED_LOCK = threading.Lock()


def get_pool(world_size: int, backend: str = "gloo", device: str = "cpu") -> WorkerPool:
    """The process-wide pool for this configuration, shared by every caller; closed at exit."""
    key = (world_size, backend, device)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = WorkerPool(world_size, backend=backend, device=device)
        return _SHARED[key]


def close_shared_pools() -> None:
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
        _SHARED.clear()
    for pool in pools:
        pool.close()


def _at_exit() -> None:
    # Every pool, shared or not: a live worker would hold the resource tracker's pipe open,
    # and stopping the tracker below would then wait for it forever.
    close_shared_pools()
    for pool in list(_LIVE):
        pool.close()
    # The fork server and multiprocessing's resource tracker would outlive us by a moment and
    # be reparented; where the init process does not reap (some containers) each would stay a
    # zombie. Stop and reap them ourselves: the server first, as it holds the tracker's pipe.
    # Not while the program's own processes still run: multiprocessing, whose exit handler
    # comes after this one, joins those, and they need both.
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    if any(not process.daemon for process in multiprocessing.active_children()):
        return

    # The server would exit by itself once every process it forked has closed its copy of the
    # "alive" pipe, and then spend a second finalising an interpreter that holds torch (or
    # finish importing torch first, when it is still starting). It holds nothing to flush:
    # close our end and stop it outright.
    server = getattr(forkserver, "_forkserver", None)
    if getattr(server, "_forkserver_pid", None) is not None:
        _stop_and_reap(server._forkserver_pid, close_fd=server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_alive_fd = None
    # The tracker ignores SIGTERM and exits, cleaning up, once every holder of its pipe has
    # closed it; whatever still holds it (a process we never started) gets the grace period,
    # then the tracker is killed rather than waited for forever.
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    if getattr(tracker, "_pid", None) is not None and getattr(tracker, "_fd", None) is not None:
        _stop_and_reap(tracker._pid, close_fd=tracker._fd)
        tracker._pid = tracker._fd = None


def _stop_and_reap(pid: int, close_fd: int | None) -> None:
    """Close our end of its pipe, then SIGTERM and, after _GRACE_S, SIGKILL; reap it.

    A signal goes only to a child that waitpid has just shown still running: an unreaped
    child's pid cannot have been given to another process."""
    if close_fd is not None:
        os.close(close_fd)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _reaped(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + _GRACE_S
        while time.monotonic() < deadline:
            if _reaped(pid):
                return
            time.sleep(0.01)


def _reaped(pid: int) -> bool:
    """Reap `pid` if it has exited; True unless it is our child and still running."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:  # not our child, or reaped elsewhere already
        return True


atexit.register(_at_exit)
