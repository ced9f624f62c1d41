"""The source article's chain rule, dL/dθ = Σ_i dL/dy_i · dy_i/dθ, made computable.

`explicit_chain_rule` builds the right-hand side from two factors measured without autograd:
dL/dy_i of the outer function and dy_i/dθ of the inner one, each by central differences in
float64 (jacobians.py's `central_difference_jacobian`), and contracts them over the
intermediate y (`contract`). `autograd_gradient` is what one backward pass gives. The claim is
that the two agree; since the explicit side never runs a backward pass, a wrong backward
formula shows as a disagreement instead of being reproduced on both sides.
"""
from __future__ import annotations

from typing import Callable

import torch

from suite.conformance.autograd.jacobians import EPS, central_difference_jacobian


def autograd_gradient(inner: Callable, outer: Callable, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.detach().requires_grad_()
    (grad,) = torch.autograd.grad(outer(inner(theta)), theta)
    return grad


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
