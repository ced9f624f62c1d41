"""Deliberately wrong custom autograd.Functions: each carries one flaw check_function must catch.

Each is a plausible mistake, not a caricature; the check that must flag it is declared with
its case in suite/cases/functions.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import Function

from suite.cases.function_examples import (SquareWithMarkedNorm, BroadcastMul, CubeSavedInput, FakeQuantizeStraightThrough,
                                           LinearNeedsInputGrad, ScaleWithVmapRule, SigmoidTwiceDifferentiable,
                                           SinWithJvp)


class CubeWrongScale(CubeSavedInput):
    """x**3 whose backward forgets that d/dx x**3 is 3x**2 and uses 2x**2."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x ** 2 * grad


class SwappedGradients(Function):
    """x * y**2 whose backward returns the two gradients in the wrong order."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y ** 2

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return 2 * x * y * grad, y ** 2 * grad


class MissingGradient(Function):
    """x * y whose backward returns None for y, as if y were a constant."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(y)
        return x * y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y, None


class CubeDetachedBackward(CubeSavedInput):
    """x**3 whose backward detaches x: first derivatives right, second derivatives silently zero."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x.detach() ** 2 * grad


class SinWrongJvp(SinWithJvp):
    """sin with a correct backward and a jvp that uses sin instead of cos."""

    @staticmethod
    def jvp(ctx, x_tangent):
        (x,) = ctx.saved_tensors
        return torch.sin(x) * x_tangent


_SQRT_2_OVER_PI = (2 / torch.pi) ** 0.5


class GeluTanhApproximation(Function):
    """Claims to be F.gelu (exact, erf) but computes the tanh approximation, consistently.

    Forward and backward agree with each other, so gradcheck passes; only a comparison with
    the reference it claims to implement shows the gap (up to about 5e-4).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.gelu(x, approximate="tanh")

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        t = torch.tanh(inner)
        d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x ** 2)
        return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)


class BroadcastMulMeanReduction(BroadcastMul):
    """x * y with y broadcast over rows, whose backward averages y's gradient instead of summing."""

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return grad * y, (grad * x).mean(0, keepdim=True)


class NoisyBackward(Function):
    """2x whose backward adds a little noise: each backward gives a different answer."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad * (1 + 1e-4 * torch.rand((), dtype=grad.dtype, device=grad.device))


class GradientForAFloat(Function):
    """k * x whose backward also returns a gradient for the Python float k."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return k * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.k, (grad * x).sum()


class LinearNeedsInputGradMisread(LinearNeedsInputGrad):
    """x @ w.T + b that gates x's gradient on needs_input_grad[1] (w's) instead of [0].

    Right whenever every input requires grad, which is how most tests call it; wrong (x's
    gradient vanishes) when the weight is frozen, as in fine-tuning.
    """

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[1] else None
        grad_w = grad.T @ x if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class ScaleVmapRuleForgetsScale(ScaleWithVmapRule):
    """k * x whose hand-written vmap rule returns x unscaled."""

    @staticmethod
    def vmap(info, in_dims, x, k):
        return x.clone(), in_dims[0]


class FakeQuantizeUnclipped(FakeQuantizeStraightThrough):
    """A straight-through estimator that passes the gradient through clamped values too: the
    clamp's zero gradient is lost, so values pinned at the grid's ends keep being pushed out."""

    @staticmethod
    def backward(ctx, grad):
        return grad.clone(), None


class SquareGivingTheNormATangent(SquareWithMarkedNorm):
    """jvp gives a tangent to the output forward marked non-differentiable."""

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return 2 * x * tangent, None, (x * tangent).sum() / x.norm()


class SigmoidFastPathUnderCompile(SigmoidTwiceDifferentiable):
    """sigmoid in eager, but a "fast path" for torch.compile takes the piecewise-linear hard
    sigmoid. Every eager check passes; only running it compiled shows the difference."""

    @staticmethod
    def forward(ctx, x):
        y = F.hardsigmoid(x) if torch.compiler.is_compiling() else torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y
