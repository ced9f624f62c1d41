"""The source article's chain rule, dL/dθ = Σ_i dL/dy_i · dy_i/dθ, made computable.

`explicit_chain_rule` builds the right-hand side from two Jacobians that
torch.autograd.functional.jacobian computes separately (dL/dy of the outer function and
dy/dθ of the inner one) and contracts them over the intermediate y. `autograd_gradient`
is what one backward pass gives. The claim is that the two agree.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.functional import jacobian


def autograd_gradient(inner: Callable, outer: Callable, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.detach().requires_grad_()
    (grad,) = torch.autograd.grad(outer(inner(theta)), theta)
    return grad


def explicit_chain_rule(inner: Callable, outer: Callable, theta: torch.Tensor) -> torch.Tensor:
    """Σ_i dL/dy_i · dy_i/dθ, with y = inner(θ) and the scalar L = outer(y)."""
    theta = theta.detach()
    y = inner(theta).detach()
    dl_dy = jacobian(outer, y).reshape(-1)  # (n_y,)
    dy_dtheta = jacobian(inner, theta).reshape(y.numel(), -1)  # (n_y, n_theta)
    return (dl_dy @ dy_dtheta).reshape(theta.shape)  # the sum over i is this contraction
