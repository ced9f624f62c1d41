"""The loop each pool worker runs: join the process group, then run calls until told to stop.

Kept apart from pool.py so that a spawned worker imports only what it needs.
"""
from __future__ import annotations

import datetime
import pickle
import traceback

from suite.errors import one_line


# Messages between the pool and its workers go as plain pickled bytes. Connection.send would use
# torch's multiprocessing reductions, which pass each tensor's storage as a file descriptor
# through a server thread (multiprocessing.resource_sharer); a worker torn down mid-transfer
# then makes that thread print a traceback. Copying the few small tensors a case carries is
# cheap, and both ends are this suite's own processes.
def send(conn, message) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn):
    return pickle.loads(conn.recv_bytes())


def _error_payload(error: BaseException) -> tuple[str, str]:
    return one_line(error), traceback.format_exc()


def _join_group(rank, world_size, backend, device, store_host, store_port, timeout_s):
    import torch
    import torch.distributed as dist

    # 2 cores are shared by every rank: more threads per rank only oversubscribe them.
    torch.set_num_threads(1)
    if device == "cuda":
        # NCCL needs one GPU per rank; gloo over CUDA tensors may share the only one.
        torch.cuda.set_device(rank % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(store_host, store_port, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def worker_main(rank, world_size, backend, device, store_host, store_port, timeout_s, conn):
    """Messages in: (call_id, fn, args) or None to stop. Out: ("ready"|call_id, ok, payload)."""
    try:
        _join_group(rank, world_size, backend, device, store_host, store_port, timeout_s)
    except BaseException as error:  # the parent must learn why, not wait for a timeout
        try:
            send(conn, ("ready", False, _error_payload(error)))
        except OSError:  # the parent is gone already: nobody is left to tell
            pass
        return
    from suite.timing.settings import preserved_settings

    send(conn, ("ready", True, None))
    while True:
        try:
            message = receive(conn)
        except (EOFError, OSError):  # the parent is gone: nothing left to serve
            break
        if message is None:
            break
        call_id, fn, args = message
        try:
            # A call may switch TF32 off or change threads; the next call on this worker (a
            # timing, say) must find the worker as it was.
            with preserved_settings():
                result = fn(rank, world_size, *args)
            send(conn, (call_id, True, result))
        except BaseException as error:
            send(conn, (call_id, False, _error_payload(error)))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
