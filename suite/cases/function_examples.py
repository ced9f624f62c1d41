"""Correct custom autograd.Functions, one per feature of the Function API.

They are registered in suite/cases/functions.py; each must pass check_function. Several are
written in both styles PyTorch supports: ctx as forward's first argument, or a plain forward
with setup_context (which torch.func transforms such as vmap and jvp require).
"""
from __future__ import annotations

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable


class CubeSavedInput(Function):
    """x**3, saving its input. The backward is built of differentiable ops: twice differentiable."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * grad


class ExpSavedOutput(Function):
    """exp(x), saving its output: the backward reuses the result instead of recomputing it."""

    @staticmethod
    def forward(ctx, x):
        result = x.exp()
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad * result


class SigmoidTwiceDifferentiable(Function):
    """sigmoid, whose backward uses the saved output: double backward flows through it again."""

    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)


class ScaledMulSetupContext(Function):
    """alpha * x * y in setup_context style, with a float argument that gets a None gradient."""

    @staticmethod
    def forward(x, y, alpha):
        return alpha * x * y

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, alpha = inputs
        ctx.save_for_backward(x, y)
        ctx.alpha = alpha

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return ctx.alpha * grad * y, ctx.alpha * grad * x, None


class MulInPlace(Function):
    """x *= k in place: mark_dirty tells autograd the input tensor now holds the output."""

    @staticmethod
    def forward(ctx, x, k):
        x.mul_(k)
        ctx.mark_dirty(x)
        ctx.k = k
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.k, None


class SortWithIndices(Function):
    """Sorted values and their indices; the integer indices are marked non-differentiable."""

    @staticmethod
    def forward(ctx, x):
        values, indices = x.sort(dim=-1)
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, grad_indices):
        (indices,) = ctx.saved_tensors
        return torch.zeros_like(grad_values).scatter(-1, indices, grad_values)


class TwoScalesUnmaterialized(Function):
    """(2x, 3x) with set_materialize_grads(False): an unused output's gradient arrives as None."""

    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        return 2 * x, 3 * x

    @staticmethod
    def backward(ctx, grad_double, grad_triple):
        if grad_double is None and grad_triple is None:
            return None
        total = 0
        if grad_double is not None:
            total = total + 2 * grad_double
        if grad_triple is not None:
            total = total + 3 * grad_triple
        return total


class TanhOnceDifferentiable(Function):
    """tanh whose backward is declared @once_differentiable: double backward must raise."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class SinWithJvp(Function):
    """sin with both a backward (reverse mode) and a jvp (forward mode)."""

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)

    @staticmethod
    def jvp(ctx, x_tangent):
        (x,) = ctx.saved_tensors
        return torch.cos(x) * x_tangent


class CosVmappable(Function):
    """cos with generate_vmap_rule = True: torch.func.vmap runs it per sample automatically."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.cos(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -grad * torch.sin(x)


class ScaleWithVmapRule(Function):
    """k * x with a hand-written vmap staticmethod: a batched call is one call on the batch."""

    @staticmethod
    def forward(x, k):
        return x * k

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.k = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.k, None

    @staticmethod
    def vmap(info, in_dims, x, k):
        return ScaleWithVmapRule.apply(x, k), in_dims[0]


class PowerWithOptions(Function):
    """scale * x**exponent with int, float and str arguments (the str only labels the call)."""

    @staticmethod
    def forward(ctx, x, exponent: int, scale: float, label: str):
        ctx.save_for_backward(x)
        ctx.exponent, ctx.scale = exponent, scale
        return scale * x ** exponent

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.scale * ctx.exponent * x ** (ctx.exponent - 1), None, None, None


class BroadcastMul(Function):
    """x * y with broadcasting: each gradient is summed back to its input's shape."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return (grad * y).sum_to_size(x.shape), (grad * x).sum_to_size(y.shape)


class LinearNeedsInputGrad(Function):
    """x @ w.T + b computing only the gradients asked for (ctx.needs_input_grad)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad.T @ x if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


QMIN, QMAX = -8, 7  # a signed 4-bit integer grid


class FakeQuantizeStraightThrough(Function):
    """x rounded to a 4-bit grid of step `scale`, as in quantization-aware training.

    Rounding's derivative is zero almost everywhere, which would stop training; backward
    passes the gradient straight through where the rounded value lies on the grid, and zero
    where it was clamped: a straight-through estimator, not the derivative, so its case
    declares the intended gradient (backward_reference).
    """

    @staticmethod
    def forward(ctx, x, scale):
        steps = torch.round(x / scale)
        ctx.save_for_backward((steps >= QMIN) & (steps <= QMAX))
        return steps.clamp(QMIN, QMAX) * scale

    @staticmethod
    def backward(ctx, grad):
        (on_grid,) = ctx.saved_tensors
        return grad * on_grid, None


class CubeWithNumpyCopy(Function):
    """x**3, also returning its input as a numpy array: a non-tensor output, which derivative
    checks must leave out rather than crash on."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3, x.detach().numpy().copy()

    @staticmethod
    def backward(ctx, grad, grad_copy):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * grad


class SquareWithMarkedNorm(Function):
    """x**2, its argmax (int64) and its norm, the norm marked non-differentiable on purpose."""

    @staticmethod
    def forward(ctx, x):
        norm = x.norm()
        ctx.mark_non_differentiable(norm)
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x ** 2, x.argmax(), norm

    @staticmethod
    def backward(ctx, grad, grad_index, grad_norm):
        (x,) = ctx.saved_tensors
        return 2 * x * grad

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return 2 * x * tangent, None, None
