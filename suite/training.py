"""The corrected training loop of the article: one model, updated by its own optimizer."""
from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader, Dataset

from suite.cases.models import ModelSpec


def train_loop(model, optimizer, loss_fn, batches, steps: int) -> list[float]:
    """zero_grad, forward, loss, backward, step, as the article's loops do; the loss of each step."""
    losses = []
    for inputs, labels in itertools.islice(batches, steps):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train(spec: ModelSpec, data: Dataset, steps: int, batch_size: int = 32, seed: int = 0,
          device="cpu") -> list[float]:
    """Train a fresh `spec` model for `steps` batches of `data`; same seed, same losses."""
    torch.manual_seed(seed)
    model = spec.build().to(device)
    optimizer = spec.make_optimizer(model.parameters())
    loader = DataLoader(data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    batches = ((x.to(device), y.to(device)) for x, y in itertools.cycle(loader))
    return train_loop(model, optimizer, spec.loss_fn, batches, steps)
