"""nn.DataParallel against the bare module: one forward and backward, outputs and gradients compared.

DataParallel scatters the batch over its GPUs (torch.chunk along dim 0, so an uneven batch
gives an uneven last chunk), runs one replica per GPU and gathers on the first. The gathered
output and the gradients summed back onto the module must equal one device on the whole
batch, except where a layer looks at its batch: BatchNorm in training mode sees one chunk.
Without a GPU, DataParallel holds no devices and calls the module directly.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from suite.conformance.closeness import max_abs_diff, mismatch


@dataclass
class DataParallelReport:
    device_ids: list[int]
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # output, gradient, buffer
    first_mismatch: str | None = None
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.first_mismatch is None


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, bool]:
    return max_abs_diff(a, b), mismatch(a, b) is None


@contextlib.contextmanager
def _full_float32():
    """TF32 keeps 10 mantissa bits, and a chunk may get other kernels than the whole batch:
    the float32 tolerances would measure TF32, not DataParallel. Restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_dataparallel(model_fn: Callable[[], nn.Module], inputs: torch.Tensor,
                       targets: torch.Tensor, *, loss_fn: Callable,
                       device_ids: list[int] | None = None, mode: str = "train",
                       seed: int = 0) -> DataParallelReport:
    """DataParallel(model) on `device_ids` (all GPUs when None) against the bare model on the
    first of them (the CPU when there is no GPU), from the same weights and the same batch."""
    torch.manual_seed(seed)
    bare = model_fn()
    twin = model_fn()
    twin.load_state_dict(bare.state_dict())
    home = torch.device("cuda", (device_ids or [torch.cuda.current_device()])[0]) \
        if torch.cuda.is_available() else torch.device("cpu")
    bare.to(home).train(mode == "train")
    wrapped = nn.DataParallel(twin.to(home), device_ids=device_ids).train(mode == "train")

    found: list[tuple[str, str, float, bool]] = []
    outputs = []
    with _full_float32():
        for model in (bare, wrapped):
            out = model(inputs.to(home))
            loss_fn(out, targets.to(home)).backward()
            outputs.append(out)
    found.append(("output", "output", *_diff(outputs[1], outputs[0])))
    twin_params = dict(twin.named_parameters())
    for name, param in bare.named_parameters():
        found.append(("gradient", name, *_diff(twin_params[name].grad, param.grad)))
    twin_buffers = dict(twin.named_buffers())
    for name, buf in bare.named_buffers():
        if buf.is_floating_point():
            found.append(("buffer", name, *_diff(twin_buffers[name], buf)))

    report = DataParallelReport(device_ids=list(wrapped.device_ids))
    for category, _, diff, _ in found:
        report.max_abs_diff[category] = max(report.max_abs_diff.get(category, 0.0), diff)
    mismatch = next(((c, n, d) for c, n, d, ok in found if not ok), None)
    devices = f"GPUs {report.device_ids}" if report.device_ids else "no GPU (pass-through)"
    if mismatch:
        report.first_mismatch = f"{mismatch[0]} {mismatch[1]}"
        report.detail = f"differs on {devices}: {report.first_mismatch}, max abs diff {mismatch[2]:.3g}"
    else:
        maxima = ", ".join(f"{c} {d:.2g}" for c, d in report.max_abs_diff.items())
        report.detail = f"equal on {devices}: max abs diff {maxima}"
    return report
