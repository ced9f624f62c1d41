"""The CPU cores this process may use, and torch's intra-op thread count set for a block.

One place for both, so that a timing, a check and the machine record count cores the same way
and every block that sets a thread count restores it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def usable_cpus() -> set[int]:
    """The CPUs this process may run on: the affinity mask, which containers and taskset narrow
    below os.cpu_count(); every CPU where there is no mask (not Linux)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    return len(usable_cpus())


@contextmanager
def torch_threads(count: int):
    """Run the block with torch's intra-op pool at `count` threads, then restore the count it had,
    even on error: a count left behind would leak into whatever runs next (a check into a timing)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
