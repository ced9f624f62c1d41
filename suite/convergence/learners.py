"""What a convergence run trains: the article's loop as corrected, or as written (to show it cannot learn).

A learner has `step(inputs, labels)` (one optimizer step; the loss, detached, left on the device
so that no step waits for the device) and `predict(inputs)` (logits of the model it trains).
"""
from __future__ import annotations

import contextlib

import torch

from suite.cases.models import ModelSpec
from suite.errors import SuiteError
from suite.timing.steps import DTYPES

# The dtypes a run can train in (the timings' own). bfloat16 is autocast, as mixed precision is
# used in practice: parameters and optimizer state stay float32.


class UnknownDtypeError(SuiteError):
    pass


def require_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UnknownDtypeError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return dtype


def autocast(device: torch.device, dtype: str):
    if require_dtype(dtype) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class CorrectedLoop:
    """The article's loop as the suite corrects it: one model, and the optimizer holds its parameters."""

    name = "corrected"

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: str, seed: int):
        self.spec, self.device, self.dtype = spec, device, dtype
        # Built on the CPU from the seed, then moved: the same initial weights on every device.
        self.model = spec.build(seed=seed).to(device)
        self.optimizer = spec.make_optimizer(self.model.parameters())

    def step(self, inputs, labels) -> torch.Tensor:
        self.model.train()
        self.optimizer.zero_grad()
        with autocast(self.device, self.dtype):
            loss = self.spec.loss_fn(self.model(inputs), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach().float()

    @torch.no_grad()
    def predict(self, inputs) -> torch.Tensor:
        self.model.eval()
        with autocast(self.device, self.dtype):
            return self.model(inputs)


class ArticleLiteralLoop(CorrectedLoop):
    """Section 3.2.2 as written (defect mnist_net_recreated_each_step): the optimizer gets
    `Net().parameters()` and every step computes its loss with another fresh `Net()`.

    The only model that persists is the optimizer's, which never receives a gradient; it is the
    one evaluated. The network is the corrected one, so that only the loop's defect shows.
    """

    name = "article_literal"

    def step(self, inputs, labels) -> torch.Tensor:
        self.optimizer.zero_grad()
        with autocast(self.device, self.dtype):
            loss = self.spec.loss_fn(self.spec.build().to(self.device)(inputs), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach().float()


LOOPS = {loop.name: loop for loop in (CorrectedLoop, ArticleLiteralLoop)}
