"""A catalogue of custom autograd.Functions, declared as data, for check_function.

Correct Functions (suite/cases/function_examples.py) cover the Function API's features; each
must conform. A Function whose gradient is a surrogate on purpose declares it
(`backward_reference`), as check_function takes it. Deliberately wrong ones
(suite/cases/function_flaws.py) each expect the check that must flag them to fail:
check_function is worth what it catches. Inputs are float64, small and seeded, and keep away
from non-differentiable points (rounding and clamping boundaries included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd import Function

from suite.cases import function_examples as ok
from suite.cases import function_flaws as bad
from suite.cases.expect import FAILS, Expect, checks_with, fails
from suite.cases.registry import Registry
from suite.cases.samples import distinct, leaf, randn, seeded


@dataclass(frozen=True)
class FunctionCase:
    name: str
    function: type[Function]
    inputs: Callable[[], tuple]  # forward's arguments: tensors and plain Python values
    feature: str  # what the case shows (for a flawed one: the flaw)
    reference: Callable | None = None  # what the Function claims to compute
    backward_reference: Callable | None = None  # the intended gradient, when not the derivative
    # A flawed Function's: the check that must catch the flaw fails. Its other checks are not
    # judged (a wrong backward fails every check built on it); a correct one passes them all.
    expect: tuple[Expect, ...] = ()
    kind: str = "function"

    @property
    def flawed(self) -> bool:
        return bool(self.expect)

    def describe(self) -> str:
        verdict = f"must fail {', '.join(checks_with(self.expect, FAILS))}" if self.flawed else "conforms"
        return f"{self.function.__name__}: {self.feature} ({verdict})"


CASES: Registry[FunctionCase] = Registry("function")


def case(name, function, inputs, feature, reference=None, backward_reference=None, caught_by="") -> FunctionCase:
    """Declare a Function; a flawed one names the check that must catch its flaw (`caught_by`)."""
    expect = (fails(caught_by, why=f"the flaw: {feature}"),) if caught_by else ()
    return CASES.add(FunctionCase(name, function, inputs, feature, reference, backward_reference, expect))


def _grid_samples(g, scale=0.25):
    """x / scale near grid points (never within 0.2 of a rounding or clamping boundary), some of
    them beyond the 4-bit range, where the straight-through gradient is zero."""
    steps = torch.tensor([[-11.0, -8, -3, 0], [2, 5, 7, 9], [-1, 3, 6, 12]], dtype=torch.float64)
    return leaf(scale * (steps + 0.6 * (torch.rand(steps.shape, generator=g, dtype=torch.float64) - 0.5))), scale


def _fake_quantize(x, scale):
    return torch.fake_quantize_per_tensor_affine(x, scale, 0, ok.QMIN, ok.QMAX)


def _fake_quantize_gradient(inputs, grad_outputs):
    """The intended straight-through gradient: that of PyTorch's own fake_quantize, an
    implementation independent of the Function's."""
    x, scale = inputs
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(_fake_quantize(x, scale), x, grad_outputs[0])[0], None


# --- correct Functions: each must conform --------------------------------------------------
case("saved_input", ok.CubeSavedInput, lambda: (randn(seeded(0), 3, 4),),
     "save_for_backward of an input; twice differentiable", lambda x: x ** 3)
case("saved_output", ok.ExpSavedOutput, lambda: (randn(seeded(1), 3, 4),),
     "save_for_backward of the output", torch.exp)
case("twice_differentiable", ok.SigmoidTwiceDifferentiable, lambda: (randn(seeded(2), 3, 4),),
     "double backward through a saved output", torch.sigmoid)
case("setup_context", ok.ScaledMulSetupContext, lambda: (randn(seeded(3), 3, 4), randn(seeded(4), 3, 4), 1.5),
     "setup_context style with a float argument", lambda x, y, alpha: alpha * x * y)
case("mark_dirty", ok.MulInPlace, lambda: (randn(seeded(5), 3, 4), 2.5),
     "in place with mark_dirty", lambda x, k: x * k)
case("mark_non_differentiable", ok.SortWithIndices, lambda: (distinct(seeded(6), 3, 5),),
     "integer output marked non-differentiable", lambda x: x.sort(dim=-1))
case("materialize_grads_off", ok.TwoScalesUnmaterialized, lambda: (randn(seeded(7), 3, 4),),
     "set_materialize_grads(False): None gradients handled", lambda x: (2 * x, 3 * x))
case("once_differentiable", ok.TanhOnceDifferentiable, lambda: (randn(seeded(8), 3, 4),),
     "@once_differentiable backward", torch.tanh)
case("jvp", ok.SinWithJvp, lambda: (randn(seeded(9), 3, 4),), "forward mode through jvp", torch.sin)
case("generate_vmap_rule", ok.CosVmappable, lambda: (randn(seeded(10), 3, 4),),
     "generate_vmap_rule = True", torch.cos)
case("vmap_staticmethod", ok.ScaleWithVmapRule, lambda: (randn(seeded(11), 3, 4), 0.5),
     "a hand-written vmap rule", lambda x, k: x * k)
case("non_tensor_arguments", ok.PowerWithOptions, lambda: (randn(seeded(12), 3, 4), 3, 0.5, "cube"),
     "int, float and str arguments", lambda x, exponent, scale, label: scale * x ** exponent)
case("broadcasting", ok.BroadcastMul, lambda: (randn(seeded(13), 3, 4), randn(seeded(14), 1, 4)),
     "broadcast inputs, gradients summed to their shapes", torch.mul)
case("needs_input_grad", ok.LinearNeedsInputGrad,
     lambda: (randn(seeded(15), 3, 4), randn(seeded(16), 2, 4), randn(seeded(17), 2)),
     "computes only the gradients needs_input_grad asks for", F.linear)
case("straight_through_estimator", ok.FakeQuantizeStraightThrough, lambda: _grid_samples(seeded(18)),
     "a declared surrogate gradient (backward_reference)", _fake_quantize,
     backward_reference=_fake_quantize_gradient)

case("non_tensor_output", ok.CubeWithNumpyCopy, lambda: (randn(seeded(37), 4),),
     "a numpy array among the outputs, left out of derivative checks", lambda x: x ** 3)
case("non_differentiable_outputs", ok.SquareWithMarkedNorm, lambda: (randn(seeded(38), 4),),
     "an int64 output and a mark_non_differentiable one")

# --- deliberately wrong Functions: each must be caught by `caught_by` ----------------------
case("wrong_scale", bad.CubeWrongScale, lambda: (randn(seeded(20), 3, 4),),
     "backward 2x**2 instead of 3x**2", lambda x: x ** 3, caught_by="gradcheck")
case("swapped_gradients", bad.SwappedGradients, lambda: (randn(seeded(21), 3, 4), randn(seeded(22), 3, 4)),
     "backward returns the gradients in the wrong order", lambda x, y: x * y ** 2, caught_by="gradcheck")
case("missing_gradient", bad.MissingGradient, lambda: (randn(seeded(23), 3, 4), randn(seeded(24), 3, 4)),
     "backward returns None for a differentiable input", torch.mul, caught_by="gradcheck")
case("wrong_second_derivative", bad.CubeDetachedBackward, lambda: (randn(seeded(25), 3, 4),),
     "backward detaches its saved input: second derivatives silently zero", lambda x: x ** 3,
     caught_by="gradgradcheck")
case("wrong_jvp", bad.SinWrongJvp, lambda: (randn(seeded(26), 3, 4),),
     "jvp uses sin instead of cos", torch.sin, caught_by="forward_ad")
case("forward_differs_from_reference", bad.GeluTanhApproximation, lambda: (randn(seeded(27), 3, 4),),
     "tanh-approximate gelu claimed to be exact gelu", F.gelu, caught_by="reference_output")
case("wrong_broadcast_reduction", bad.BroadcastMulMeanReduction,
     lambda: (randn(seeded(28), 3, 4), randn(seeded(29), 1, 4)),
     "broadcast gradient averaged instead of summed", torch.mul, caught_by="gradcheck")
case("nondeterministic_backward", bad.NoisyBackward, lambda: (randn(seeded(30), 3, 4),),
     "backward adds noise", lambda x: 2 * x, caught_by="reentrant")
case("gradient_for_a_float", bad.GradientForAFloat, lambda: (randn(seeded(31), 3, 4), 1.5),
     "backward returns a gradient for a float argument", lambda x, k: k * x, caught_by="grad_per_input")
case("needs_input_grad_misread", bad.LinearNeedsInputGradMisread,
     lambda: (randn(seeded(32), 3, 4), randn(seeded(33), 2, 4), randn(seeded(34), 2)),
     "x's gradient gated on the weight's needs_input_grad", F.linear, caught_by="needs_input_grad")
case("wrong_vmap_rule", bad.ScaleVmapRuleForgetsScale, lambda: (randn(seeded(35), 3, 4), 0.5),
     "a vmap rule that forgets the scale", lambda x, k: x * k, caught_by="vmap")
case("surrogate_differs_from_declaration", bad.FakeQuantizeUnclipped, lambda: _grid_samples(seeded(36)),
     "a straight-through gradient that forgets the clamp", _fake_quantize, caught_by="backward_reference",
     backward_reference=_fake_quantize_gradient)
case("tangent_for_a_marked_output", bad.SquareGivingTheNormATangent, lambda: (randn(seeded(39), 4),),
     "jvp gives a tangent to an output marked non-differentiable", caught_by="non_differentiable")
case("fast_path_under_compile", bad.SigmoidFastPathUnderCompile, lambda: (randn(seeded(40), 3, 4),),
     "a torch.compile-only fast path that computes hard sigmoid", torch.sigmoid, caught_by="compile")
