"""The source article's chain rule, dL/dθ = Σ_i dL/dy_i · dy_i/dθ, made computable.

`explicit_chain_rule` builds the right-hand side from two factors measured without autograd:
dL/dy_i of the outer function and dy_i/dθ of the inner one, each by central differences in
float64 (`central_difference_jacobian`), and contracts them over the intermediate y
(`contract`). `autograd_gradient` is what one backward pass gives. The claim is that the two
agree; since the explicit side never runs a backward pass, a wrong backward formula shows as
a disagreement instead of being reproduced on both sides.
"""
from __future__ import annotations

from typing import Callable

import torch

# Central differences err by about eps² · f''' (truncation) plus 1e-16 · |f| / eps (rounding):
# in float64, eps = 1e-6 keeps both near 1e-10, far inside assert_close's float64 tolerances.
EPS = 1e-6


def autograd_gradient(inner: Callable, outer: Callable, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.detach().requires_grad_()
    (grad,) = torch.autograd.grad(outer(inner(theta)), theta)
    return grad


def central_difference_jacobian(fn: Callable, x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """d fn(x) / d x as a (fn(x).numel(), x.numel()) matrix, column j = (fn(x + eps e_j) -
    fn(x - eps e_j)) / 2 eps. Float64 only, and computed with autograd off."""
    if x.dtype != torch.float64:
        raise TypeError(f"central differences need float64 to be accurate, got {x.dtype}")
    x = x.detach()
    with torch.no_grad():
        columns = []
        for j in range(x.numel()):
            step = torch.zeros_like(x).reshape(-1)
            step[j] = eps
            step = step.reshape(x.shape)
            columns.append(((fn(x + step) - fn(x - step)) / (2 * eps)).reshape(-1))
    return torch.stack(columns, dim=1)


def contract(dl_dy: torch.Tensor, dy_dtheta: torch.Tensor, theta_shape) -> torch.Tensor:
    """Σ_i dL/dy_i · dy_i/dθ: dl_dy has one entry per y_i, dy_dtheta one row per y_i."""
    dl_dy = dl_dy.reshape(-1)
    dy_dtheta = dy_dtheta.reshape(dl_dy.numel(), -1)
    return (dl_dy @ dy_dtheta).reshape(theta_shape)  # the sum over i is this contraction


def explicit_chain_rule(inner: Callable, outer: Callable, theta: torch.Tensor,
                        eps: float = EPS) -> torch.Tensor:
    """Σ_i dL/dy_i · dy_i/dθ, with y = inner(θ) and the scalar L = outer(y); both factors by
    central differences (float64), so no autograd takes part."""
    theta = theta.detach()
    with torch.no_grad():
        y = inner(theta)
    dl_dy = central_difference_jacobian(outer, y, eps)  # (1, n_y)
    dy_dtheta = central_difference_jacobian(inner, theta, eps)  # (n_y, n_theta)
    return contract(dl_dy, dy_dtheta, theta.shape)
