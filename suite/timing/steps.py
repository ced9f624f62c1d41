"""One iteration of a registered model, ready to time: a train step or an eval forward.

Data loading is left out on purpose: a fixed synthetic batch already on the device, so the
figure is the model's, not the disk's or the DataLoader's.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn as nn

from suite.cases.models import ModelSpec
from suite.cases.variants import MODES, SERVE
from suite.errors import SuiteError

DTYPES = ("float32", "bfloat16")  # bfloat16: AMP autocast, parameters stay fp32


def validate_mode_and_dtype(mode: str, dtype: str) -> None:
    if mode not in (*MODES, SERVE):
        raise SuiteError(f"unknown mode {mode!r}; valid: {', '.join((*MODES, SERVE))}")
    if dtype not in DTYPES:
        raise SuiteError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")


def autocast_for(device: torch.device, dtype: str):
    if dtype == "bfloat16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_step(spec: ModelSpec, mode: str, device: torch.device, batch_size: int, *,
               dtype: str = "float32", channels_last: bool = False,
               wrap: Callable[[nn.Module], nn.Module] | None = None,
               seed: int = 0) -> Callable[[], None]:
    """A closure running one iteration; `wrap` puts the model in DataParallel or DDP.

    train is the article's loop body (zero_grad, forward, loss, backward, optimizer step),
    without its `loss.item()`, which would add a host-device sync to every step; eval is a
    forward under inference_mode.
    """
    validate_mode_and_dtype(mode, dtype)
    model = spec.build(seed=seed).to(device)
    inputs, labels = spec.example_batch(batch_size, seed=seed, device=device)
    if channels_last:
        if inputs.dim() != 4:
            raise SuiteError(f"channels_last needs 4-d inputs; {spec.name} takes {inputs.dim()}-d")
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    if wrap is not None:
        model = wrap(model)
    autocast = autocast_for(device, dtype)

    if mode in ("eval", SERVE):  # serve: the same forward, timed one call at a time (suite.timing.options)
        model.eval()

        def eval_step() -> None:
            with torch.inference_mode(), autocast():
                model(inputs)

        return eval_step

    model.train()
    optimizer = spec.make_optimizer(model.parameters())
    loss_fn = spec.loss_fn

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()

    return train_step
