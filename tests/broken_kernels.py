"""A planted broken kernel for the crash-isolation tests (suite.isolation), imported by every
torchsuite process through TORCHSUITE_IMPORT=broken_kernels (with tests/ on PYTHONPATH).

BROKEN_KERNEL="erf:segv" replaces the CPU kernel of aten::erf, through torch.library, with one
that does what a broken kernel does: segv (SIGSEGV to its own process), abort (abort()), exit
(os._exit(3) inside the kernel), hang (sleeps for an hour), raise (a RuntimeError) or oom (a
torch.OutOfMemoryError, as a GPU allocator raises it). Without BROKEN_KERNEL it changes nothing.
"""
from __future__ import annotations

import os
import signal
import time

import torch

OP, _, HOW = os.environ.get("BROKEN_KERNEL", "").partition(":")


def _broken(*args, **kwargs):
    if HOW == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif HOW == "abort":
        os.abort()
    elif HOW == "exit":
        os._exit(3)
    elif HOW == "hang":
        time.sleep(3600)
    elif HOW == "oom":
        raise torch.OutOfMemoryError(f"planted: out of memory in {OP}")
    raise RuntimeError(f"planted: a broken {OP} kernel")


if OP:
    _LIBRARY = torch.library.Library("aten", "IMPL")  # kept alive: the registration lives with it
    _LIBRARY.impl(OP, _broken, "CPU")
