"""check_function holds a backward to autograd's rules, no stricter and no looser; leaves
non-tensor, integer and non-differentiable outputs out of derivative checks; and accepts a
declared surrogate gradient (backward_reference) only when backward matches it."""
import pytest
import torch
from torch.autograd import Function

from suite.cases.functions import CASES as FUNCTIONS
from suite.cases.samples import plain, seeded
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


X = plain(seeded(40), 4)
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


def test_a_non_tensor_output_is_left_out_of_derivative_checks():
    fn, inputs, _ = registered("non_tensor_output")
    report = check_function(fn, inputs, reference=lambda x: x ** 3)
    assert report.passed, f"\n{report}"
    assert "1 non-tensor output(s)" in report.check("forward").detail


def test_integer_and_marked_outputs_are_checked_to_stay_non_differentiable():
    fn, inputs, _ = registered("non_differentiable_outputs")
    report = check_function(fn, inputs)
    assert report.passed, f"\n{report}"
    detail = report.check("non_differentiable").detail
    assert "output 1 (int64), output 2 (float64)" in detail and "no tangent in forward mode" in detail


def test_a_tangent_for_a_marked_output_fails():
    fn, inputs, _ = registered("tangent_for_a_marked_output")
    report = check_function(fn, inputs)
    assert report.check("non_differentiable").verdict == "fail"
    assert "not a differentiable Tensor" in report.check("non_differentiable").detail


def registered(name):
    """(Function, its sample inputs, its declared backward_reference) from the catalogue."""
    case = FUNCTIONS.get(name)
    return case.function, case.inputs(), case.backward_reference


def test_a_surrogate_fails_undeclared_and_passes_declared():
    fn, inputs, straight_through = registered("straight_through_estimator")
    undeclared = check_function(fn, inputs)
    assert undeclared.failures() == ["gradcheck"]
    declared = check_function(fn, inputs, backward_reference=straight_through)
    assert declared.passed, f"\n{declared}"
    assert declared.check("gradcheck").verdict == "skip" and declared.check("gradgradcheck").verdict == "pass"


def test_a_declaration_is_held_to_autograd_rules_too():
    fn, inputs, straight_through = registered("straight_through_estimator")
    too_few = check_function(fn, inputs,
                             backward_reference=lambda inputs, grads: straight_through(inputs, grads)[:1])
    assert "incorrect number of gradients" in too_few.check("backward_reference").detail
    trailing = check_function(fn, inputs,
                              backward_reference=lambda inputs, grads: (*straight_through(inputs, grads), None))
    assert trailing.passed, f"\n{trailing}"


def test_assert_function_conforms_and_the_fixture_take_a_backward_reference(pytester):
    fn, inputs, straight_through = registered("straight_through_estimator")
    assert assert_function_conforms(fn, inputs, backward_reference=straight_through).passed
    pytester.makepyfile(  # a user's own test file, with its own samples
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
