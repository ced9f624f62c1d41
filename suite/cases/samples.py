"""Sample makers for the registries: float64, small, seeded by the generator they are given.

Each returns a fresh tensor; those meant to be differentiated are leaves that require grad.
`seeded(seed)` gives a generator, so a case's samples are the same on every machine.
"""
from __future__ import annotations

import torch

F64 = torch.float64


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_()


def randn(g, *shape) -> torch.Tensor:
    return leaf(torch.randn(shape, generator=g, dtype=F64))


def positive(g, *shape, low=0.5, high=2.0) -> torch.Tensor:
    return leaf(low + (high - low) * torch.rand(shape, generator=g, dtype=F64))


def away_from(g, *shape, points=(0.0,), margin=0.1) -> torch.Tensor:
    """Gaussian samples pushed at least `margin` away from each kink in `points`."""
    x = torch.randn(shape, generator=g, dtype=F64)
    for p in points:
        d = x - p
        x = torch.where(d.abs() < margin, p + torch.where(d < 0, -margin, margin) + d, x)
    return leaf(x)


def distinct(g, *shape) -> torch.Tensor:
    """Values with no ties, at least 1/numel apart: max and max_pool have a unique winner."""
    n = int(torch.tensor(shape).prod())
    x = torch.randperm(n, generator=g).to(F64).reshape(shape) / n - 0.5
    return leaf(x)


def labels(g, n, classes) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=g)


def plain(g, *shape) -> torch.Tensor:
    """A float64 tensor that is not differentiated (a constant of the op)."""
    return torch.randn(shape, generator=g, dtype=F64)
