"""FLOPs of one iteration, counted by torch.utils.flop_counter.FlopCounterMode.

Counted on the meta device: FLOPs depend only on shapes, so no real arithmetic is spent and
the count is the same whatever device, AMP dtype or memory format is timed.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from suite.cases.models import ModelSpec


def count_flops(spec: ModelSpec, mode: str, batch_size: int) -> int:
    """FLOPs of one train step (forward, loss, backward, optimizer step) or one eval forward."""
    try:
        return _count_on("meta", spec, mode, batch_size)
    except (NotImplementedError, RuntimeError):
        # A model whose construction or ops have no meta kernels: count with real tensors.
        return _count_on("cpu", spec, mode, batch_size)


def _count_on(device: str, spec: ModelSpec, mode: str, batch_size: int) -> int:
    with torch.device(device):
        model = spec.build(seed=0)
    inputs, labels = spec.example_batch(batch_size)
    inputs, labels = inputs.to(device), labels.to(device)
    with FlopCounterMode(display=False) as counter:
        if mode == "train":
            optimizer = spec.make_optimizer(model.parameters())
            optimizer.zero_grad(set_to_none=True)
            spec.loss_fn(model(inputs), labels).backward()
            optimizer.step()
        else:
            model.eval()
            with torch.inference_mode():
                model(inputs)
    return int(counter.get_total_flops())
