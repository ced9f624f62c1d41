"""The process-wide torch settings a figure depends on: saved, restored, and stored with it.

A conformance check may switch TF32 off or make kernels deterministic for a fair comparison;
a timing that inherits that would measure another machine. Every check runs inside
`preserved_settings()` (in the run and in each pool worker call), and every timing record
carries `current_settings()` as read by the process that timed it.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


def current_settings() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _restore(saved: dict) -> None:
    """Put back what changed, only that: a process whose backend flags are frozen (torch's own
    test utilities freeze them) can still run a check that changed nothing."""
    now = current_settings()
    if now["threads"] != saved["threads"]:
        torch.set_num_threads(saved["threads"])
    # float32_matmul_precision and matmul.allow_tf32 are one setting seen two ways: restore the
    # precision, which sets the flag with it.
    if (now["float32_matmul_precision"], now["matmul_allow_tf32"]) != (
            saved["float32_matmul_precision"], saved["matmul_allow_tf32"]):
        torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
    for key, flag in (("cudnn_allow_tf32", "allow_tf32"), ("cudnn_benchmark", "benchmark"),
                      ("cudnn_deterministic", "deterministic")):
        if now[key] != saved[key]:
            setattr(torch.backends.cudnn, flag, saved[key])
    if now["deterministic_algorithms"] != saved["deterministic_algorithms"]:
        torch.use_deterministic_algorithms(saved["deterministic_algorithms"])


@contextmanager
def preserved_settings():
    """Whatever the block changes of current_settings() is put back when it ends, even on error."""
    saved = current_settings()
    try:
        yield saved
    finally:
        _restore(saved)
