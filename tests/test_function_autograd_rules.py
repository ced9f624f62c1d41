"""check_function holds a backward to autograd's rules, no stricter and no looser; leaves
non-tensor, integer and non-differentiable outputs out of derivative checks; and accepts a
declared surrogate gradient (backward_reference) only when backward matches it."""
import numpy as np
import pytest
import torch
from torch.autograd import Function

from suite.cases.function_examples import FakeQuantizeStraightThrough, QMIN, QMAX
from suite.conformance.functions.check import assert_function_conforms, check_function

pytest_plugins = ["pytester"]


def doubling_with_backward(returns):
    """2 * x (with a float argument k) whose backward returns `returns(grad)`."""
    class Doubling(Function):
        @staticmethod
        def forward(ctx, x, k):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return returns(grad)

    return Doubling


X = torch.randn(4, dtype=torch.float64)
ACCEPTED = {  # what autograd accepts, and the note the report carries
    "trailing_nones": (lambda g: (2 * g, None, None), "1 trailing None gradient(s), which autograd drops"),
    "summed_shape": (lambda g: ((2 * g).expand(3, 4) / 3, None), "of shape (3, 4) is summed by autograd to (4,)"),
    "other_dtype": (lambda g: ((2 * g).float(), None), "torch.float32 gradient is cast by autograd to torch.float64"),
}
REFUSED = {  # what autograd refuses, in its own words
    "too_few": (lambda g: 2 * g, "incorrect number of gradients (expected 2, got 1)"),
    "extra_not_none": (lambda g: (2 * g, None, g), "incorrect number of gradients (expected 2, got 3)"),
    "gradient_for_a_float": (lambda g: (2 * g, g.sum()), "different than None at position 2"),
    "unsummable_shape": (lambda g: (torch.zeros(5, dtype=g.dtype), None), "expected shape compatible with [4]"),
    "numpy_gradient": (lambda g: (2 * g.numpy(), None), "expected Variable or None"),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_what_autograd_accepts_passes_with_a_note(name):
    returns, note = ACCEPTED[name]
    report = check_function(doubling_with_backward(returns), (X, 1.5))
    assert report.check("grad_per_input").verdict == "pass" and note in report.check("grad_per_input").detail
    assert report.check("gradcheck").verdict == "pass", f"\n{report}"


@pytest.mark.parametrize("name", REFUSED)
def test_what_autograd_refuses_fails_grad_per_input(name):
    returns, words = REFUSED[name]
    check = check_function(doubling_with_backward(returns), (X, 1.5)).check("grad_per_input")
    assert check.verdict == "fail" and "autograd refuses" in check.detail and words in check.detail


class CubeWithNumpyCopy(Function):
    """x**3, also returning its input as a numpy array (a non-tensor output)."""

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


def test_a_non_tensor_output_is_left_out_of_derivative_checks():
    report = check_function(CubeWithNumpyCopy, (X,), reference=lambda x: x ** 3)
    assert report.passed, f"\n{report}"
    assert "1 non-tensor output(s)" in report.check("forward").detail


def test_integer_and_marked_outputs_are_checked_to_stay_non_differentiable():
    report = check_function(SquareWithMarkedNorm, (X,))
    assert report.passed, f"\n{report}"
    detail = report.check("non_differentiable").detail
    assert "output 1 (int64), output 2 (float64)" in detail and "no tangent in forward mode" in detail


class SquareGivingTheNormATangent(SquareWithMarkedNorm):
    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return 2 * x * tangent, None, (x * tangent).sum() / x.norm()


def test_a_tangent_for_a_marked_output_fails():
    report = check_function(SquareGivingTheNormATangent, (X,))
    assert report.check("non_differentiable").verdict == "fail"
    assert "not a differentiable Tensor" in report.check("non_differentiable").detail


def straight_through(inputs, grad_outputs):
    x, scale = inputs
    steps = torch.round(x / scale)
    return grad_outputs[0] * ((steps >= QMIN) & (steps <= QMAX)), None


GRID = (torch.tensor([-2.9, -1.0, 0.26, 1.49, 2.6], dtype=torch.float64), 0.25)


def test_a_surrogate_fails_undeclared_and_passes_declared():
    undeclared = check_function(FakeQuantizeStraightThrough, GRID)
    assert undeclared.failures() == ["gradcheck"]
    declared = check_function(FakeQuantizeStraightThrough, GRID, backward_reference=straight_through)
    assert declared.passed, f"\n{declared}"
    assert declared.check("gradcheck").verdict == "skip" and declared.check("gradgradcheck").verdict == "pass"


def test_a_declaration_is_held_to_autograd_rules_too():
    too_few = check_function(FakeQuantizeStraightThrough, GRID,
                             backward_reference=lambda inputs, grads: straight_through(inputs, grads)[:1])
    assert "incorrect number of gradients" in too_few.check("backward_reference").detail
    trailing = check_function(FakeQuantizeStraightThrough, GRID,
                              backward_reference=lambda inputs, grads: (*straight_through(inputs, grads), None))
    assert trailing.passed, f"\n{trailing}"


def test_assert_function_conforms_and_the_fixture_take_a_backward_reference(pytester):
    assert assert_function_conforms(FakeQuantizeStraightThrough, GRID, backward_reference=straight_through).passed
    pytester.makepyfile(
        """
        import torch
        from suite.cases.function_examples import FakeQuantizeStraightThrough

        GRID = (torch.tensor([-2.9, -1.0, 0.26, 1.49, 2.6], dtype=torch.float64), 0.25)

        def test_declared(check_function):
            check_function(FakeQuantizeStraightThrough, GRID,
                           backward_reference=lambda inputs, grads: (grads[0] * (inputs[0].abs() < 1.8), None))

        def test_wrongly_declared(check_function):
            check_function(FakeQuantizeStraightThrough, GRID, backward_reference=lambda inputs, grads: (grads[0], None))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*check_function(FakeQuantizeStraightThrough): FAILS backward_reference*"])
