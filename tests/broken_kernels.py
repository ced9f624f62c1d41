"""A planted broken kernel for the crash-isolation tests (suite.isolation), imported by every
torchsuite worker process through TORCHSUITE_IMPORT=broken_kernels (with tests/ on PYTHONPATH).

BROKEN_KERNEL="erf:segv" replaces the CPU kernel of aten::erf, through torch.library, with one
that does what a broken kernel does: segv (SIGSEGV to its own process), abort (abort()), exit
(os._exit(3) inside the kernel), hang (sleeps for an hour), raise (a RuntimeError) or oom (a
torch.OutOfMemoryError, as a GPU allocator raises it). Without BROKEN_KERNEL it changes nothing
(and imports no torch: tests/isolation_tasks.py uses `misbehave` alone).
"""
from __future__ import annotations

import os
import signal
import time

OP, _, HOW = os.environ.get("BROKEN_KERNEL", "").partition(":")


def misbehave(how: str, what: str = "kernel") -> None:
    """Do what a broken kernel does (see the module's doc); "print" writes to stdout, anything
    else returns."""
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "abort":
        os.abort()
    elif how == "exit":
        os._exit(3)
    elif how == "hang":
        time.sleep(3600)
    elif how == "raise":
        raise RuntimeError(f"planted: a broken {what}")
    elif how == "oom":
        import torch

        raise torch.OutOfMemoryError(f"planted: out of memory in {what}")
    elif how == "print":
        print("a check that prints to stdout")  # must not reach a worker's channel


def _broken(*args, **kwargs):
    misbehave(HOW or "raise", f"{OP} kernel")


if OP:
    import torch

    _LIBRARY = torch.library.Library("aten", "IMPL")  # kept alive: the registration lives with it
    _LIBRARY.impl(OP, _broken, "CPU")
