"""Small dense Jacobians, to say *by how much* a gradient check failed.

gradcheck gives the verdict; when it fails, these recompute the Jacobians (central finite
differences, reverse mode, forward mode) so a report can name the worst element and its gap.
They loop over elements, so they are only for the small float64 samples the checks use.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD

Outputs = tuple[torch.Tensor, ...]


def differentiable_positions(args: Sequence) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]


def float_outputs(out) -> Outputs:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return tuple(o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point())


def bind(fn: Callable, args: Sequence) -> tuple[Callable[..., Outputs], tuple[torch.Tensor, ...], list[int]]:
    """`fn(*args)` as a function of its differentiable tensor arguments only, with float outputs.

    Returns (f, the differentiable arguments, their positions in args).
    """
    positions = differentiable_positions(args)

    def f(*diff):
        full = list(args)
        for p, d in zip(positions, diff):
            full[p] = d
        return float_outputs(fn(*full))

    return f, tuple(args[p] for p in positions), positions


def numerical_jacobians(f, inputs, eps: float = 1e-6) -> list[list[torch.Tensor]]:
    """J[o][i]: d output o / d input i by central differences, shape (out.numel(), in.numel())."""
    with torch.no_grad():
        outs = f(*[x.detach() for x in inputs])
        jac = [[torch.zeros(o.numel(), x.numel(), dtype=o.dtype) for x in inputs] for o in outs]
        for i, x in enumerate(inputs):
            for j in range(x.numel()):
                shifted = []
                for sign in (1, -1):
                    moved = [y.detach().clone() for y in inputs]
                    moved[i].view(-1)[j] += sign * eps
                    shifted.append(f(*moved))
                for o, (plus, minus) in enumerate(zip(*shifted)):
                    jac[o][i][:, j] = ((plus - minus) / (2 * eps)).reshape(-1)
    return jac


def reverse_jacobians(f, inputs) -> list[list[torch.Tensor]]:
    inputs = [x.detach().requires_grad_() for x in inputs]
    outs = f(*inputs)
    jac = [[torch.zeros(o.numel(), x.numel(), dtype=o.dtype) for x in inputs] for o in outs]
    for o, out in enumerate(outs):
        if not out.requires_grad:  # a constant output: its rows stay zero
            continue
        for r in range(out.numel()):
            seed = torch.zeros_like(out)
            seed.view(-1)[r] = 1
            grads = torch.autograd.grad(out, inputs, seed, retain_graph=True, allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    jac[o][i][r] = g.reshape(-1)
    return jac


def forward_jacobians(f, inputs) -> list[list[torch.Tensor]]:
    inputs = [x.detach() for x in inputs]
    jac = None
    for i, x in enumerate(inputs):
        for j in range(x.numel()):
            with fwAD.dual_level():
                duals = []
                for k, y in enumerate(inputs):
                    tangent = torch.zeros_like(y)
                    if k == i:
                        tangent.view(-1)[j] = 1
                    duals.append(fwAD.make_dual(y, tangent))
                outs = [fwAD.unpack_dual(o) for o in f(*duals)]
            if jac is None:
                jac = [[torch.zeros(o.primal.numel(), y.numel(), dtype=o.primal.dtype) for y in inputs]
                       for o in outs]
            for o, out in enumerate(outs):
                if out.tangent is not None:
                    jac[o][i][:, j] = out.tangent.reshape(-1)
    return jac or []


def largest_gap(expected, actual, positions: Sequence[int], expected_name="numerical",
                actual_name="analytical") -> str:
    """The worst element of two Jacobian sets, in words: where, both values, and the gap."""
    worst = None
    for o, (row_e, row_a) in enumerate(zip(expected, actual)):
        for i, (e, a) in enumerate(zip(row_e, row_a)):
            if e.numel() == 0:
                continue
            gap = (e - a).abs()
            k = int(gap.argmax())
            value = float(gap.view(-1)[k])
            if worst is None or value > worst[0]:
                r, c = divmod(k, e.shape[1])
                worst = (value, o, positions[i], r, c, float(e.view(-1)[k]), float(a.view(-1)[k]))
    if worst is None:
        return "no differentiable output"
    value, o, p, r, c, e, a = worst
    return (f"largest gap {value:.3g} in d(output {o}[{r}])/d(arg {p}[{c}]): "
            f"{expected_name} {e:.6g}, {actual_name} {a:.6g}")
