"""Process groups for multi-process checks: a reusable worker pool, and a torchrun entry point.

Starting a group costs seconds (each process imports torch), so groups are started once per
world size and fed many cases; see pool.py. `python -m suite.distributed` is the torchrun entry.
"""
from suite.distributed.pool import WorkerError, WorkerPool, get_pool

__all__ = ["WorkerError", "WorkerPool", "get_pool"]
