"""Scaling efficiency, the one rule: throughput(N) / (N x throughput of the same work on one device).

The reference is the single-device figure ("cpu" for cpu-ddp, "cuda" for cuda-ddp and
DataParallel) of the same model, mode, per-device batch, dtype and memory format, and on the
CPU at the same threads per process. Used by the run (suite.timing.plan) and the report. Kept
free of torch so the report can use it.
"""
from __future__ import annotations

import math
from typing import Mapping

REFERENCE_SETUP = {"cpu-ddp": "cpu", "cuda-ddp": "cuda", "dataparallel": "cuda"}


def reference_key(row: Mapping, setup: str | None = None) -> tuple:
    """The identity a multi-device row's reference must share; `setup` defaults to the row's reference setup."""
    setup = setup or REFERENCE_SETUP.get(row["setup"], row["setup"])
    threads = row.get("threads") if setup == "cpu" else None
    return (row["model"], row["mode"], setup, row.get("batch_size"), row.get("dtype"),
            bool(row.get("channels_last")), threads)


def efficiency(throughput: float, world_size: int, reference_throughput: float | None) -> float | None:
    if not reference_throughput or reference_throughput != reference_throughput:  # None, 0 or NaN
        return None
    value = throughput / (world_size * reference_throughput)
    return value if math.isfinite(value) else None
