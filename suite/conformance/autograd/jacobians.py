"""Small dense Jacobians, to say *by how much* a gradient check failed.

gradcheck gives the verdict; when it fails, these recompute the Jacobians (central finite
differences, reverse mode, forward mode) so a report can name the worst element and its gap.
`central_difference_jacobian` is the suite's one numerical Jacobian: the chain-rule claim and
the collective Functions' group check use it too, where autograd must not compute both sides.
They loop over elements, so they are only for the small float64 samples the checks use.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD

Outputs = tuple[torch.Tensor, ...]
# Central differences err by about eps² · f''' (truncation) plus 1e-16 · |f| / eps (rounding):
# in float64, eps = 1e-6 keeps both near 1e-10, far inside assert_close's float64 tolerances.
EPS = 1e-6


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


def central_difference_jacobian(fn: Callable, x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """d fn(x) / d x as a (fn(x).numel(), x.numel()) matrix, column j = (fn(x + eps e_j) -
    fn(x - eps e_j)) / 2 eps. Float64 only, and computed with autograd off.

    fn gets x + eps e_j, then x - eps e_j, for j in order, and nothing else (but fn(x) once when
    x is empty): the collective check relies on every rank making the same calls.
    """
    if x.dtype != torch.float64:
        raise TypeError(f"central differences need float64 to be accurate, got {x.dtype}")
    x = x.detach()
    with torch.no_grad():
        columns = []
        for j in range(x.numel()):
            # Fresh copies moved in one element: the others keep their bits (a -0.0 stays one).
            plus, minus = (x.clone(memory_format=torch.contiguous_format) for _ in range(2))
            plus.view(-1)[j] += eps
            minus.view(-1)[j] -= eps
            columns.append(((fn(plus) - fn(minus)) / (2 * eps)).reshape(-1))
        if not columns:
            return torch.zeros(fn(x).numel(), 0, dtype=x.dtype, device=x.device)
    return torch.stack(columns, dim=1)


def numerical_jacobians(f, inputs, eps: float = EPS) -> list[list[torch.Tensor]]:
    """J[o][i]: d output o / d input i by central differences, shape (out.numel(), in.numel());
    one input moves at a time, and its columns are split by output."""
    inputs = [x.detach() for x in inputs]
    with torch.no_grad():
        sizes = [o.numel() for o in f(*[x.clone() for x in inputs])]
    if not sizes:
        return []
    by_input = []
    for i, x in enumerate(inputs):
        def of_input_i(moved, i=i):
            args = [moved if k == i else y.clone() for k, y in enumerate(inputs)]  # f may write into them
            return torch.cat([o.reshape(-1) for o in f(*args)])

        by_input.append(central_difference_jacobian(of_input_i, x, eps).split(sizes))
    return [list(row) for row in zip(*by_input)]


def reverse_jacobians(f, inputs) -> list[list[torch.Tensor]]:
    """J[o][i] by reverse mode: torch.autograd.functional.jacobian's loop of one backward per
    output element (not vectorized: that needs vmap, which a Function under test need not
    support). A constant output, or one that does not depend on an input, has zeros there."""
    inputs = tuple(x.detach() for x in inputs)
    jac = torch.autograd.functional.jacobian(f, inputs, vectorize=False)
    # Each block is shaped out.shape + in.shape; the reports index (output element, input element).
    return [[j.reshape(math.prod(j.shape[:j.dim() - x.dim()]), x.numel()) for j, x in zip(row, inputs)]
            for row in jac]


def forward_jacobians(f, inputs) -> list[list[torch.Tensor]]:
    """J[o][i] by forward mode, one dual level per input element. Written out because the
    library's forward-mode Jacobians (torch.func.jacfwd, torch.autograd.functional.jacobian's
    "forward-mode") vmap over the tangents, which many Functions under test do not support
    (several of torch's own autograd_function_db fail so)."""
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
