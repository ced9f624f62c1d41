"""The check_function battery: what it passes, what it catches, and how it reports."""
import functools

import pytest
import torch
from torch.autograd import Function

import suite
from suite.cases import function_examples as ok
from suite.cases import function_flaws as bad
from suite.cases.expect import fails
from suite.cases.functions import CASES as FUNCTIONS, FunctionCase
from suite.conformance.functions.check import CHECK_NAMES, assert_function_conforms, check_function, verdicts

pytest_plugins = ["pytester"]

CORRECT = [c for c in FUNCTIONS if not c.flawed]
WRONG = [c for c in FUNCTIONS if c.flawed]
# The battery, in the order docs/autograd-and-functions.md lists it.
BATTERY = ["forward", "reference_output", "gradcheck", "backward_reference", "gradgradcheck", "once_differentiable",
           "forward_ad", "vmap", "reentrant", "grad_per_input", "non_differentiable", "needs_input_grad", "compile",
           "reference_grad", "reference_gradgrad"]


def _report(case):
    """Each case's report once a session: three tests read it."""
    return _report_of(case.name)


@functools.cache
def _report_of(name: str):
    case = FUNCTIONS.get(name)
    return check_function(case.function, case.inputs(), reference=case.reference,
                          backward_reference=case.backward_reference)


@pytest.mark.parametrize("case", CORRECT, ids=lambda c: c.name)
def test_every_correct_function_conforms(case):
    report = _report(case)
    assert report.passed, f"\n{report}"
    assert [c.name for c in report.checks] == BATTERY
    assert all(c.verdict in ("pass", "skip") and c.detail for c in report.checks)


@pytest.mark.parametrize("case", WRONG, ids=lambda c: c.name)
def test_every_wrong_function_is_flagged_by_its_expected_check(case):
    report = _report(case)
    (caught_by,) = [check for e in case.expect for check in e.checks]
    flagged = report.check(caught_by)
    assert not report.passed
    assert flagged.verdict == "fail", f"{caught_by} missed the flaw ({case.feature}):\n{report}"
    assert any(ch.isdigit() for ch in flagged.detail) or "None" in flagged.detail, flagged.detail


# Read off the catalogue's classes by hand: which define jvp, declare a vmap rule, or wrap
# backward in @once_differentiable.
DEFINES_JVP = {"jvp", "non_differentiable_outputs", "wrong_jvp", "tangent_for_a_marked_output"}
DECLARES_VMAP = {"generate_vmap_rule", "vmap_staticmethod", "wrong_vmap_rule"}
ONCE_DIFFERENTIABLE = {"once_differentiable"}


@pytest.mark.parametrize("case", CORRECT + WRONG, ids=lambda c: c.name)
def test_checks_apply_from_what_the_function_declares(case):
    skipped = {c.name for c in _report(case).checks if c.verdict == "skip"}
    assert ("forward_ad" not in skipped) == (case.name in DEFINES_JVP)
    assert ("vmap" not in skipped) == (case.name in DECLARES_VMAP)
    once = case.name in ONCE_DIFFERENTIABLE
    assert ("gradgradcheck" in skipped) == once
    assert ("once_differentiable" not in skipped) == once


def test_the_catalogue_covers_the_function_api():
    features = {c.name for c in CORRECT}
    assert {"saved_input", "saved_output", "setup_context", "mark_dirty", "mark_non_differentiable",
            "materialize_grads_off", "once_differentiable", "twice_differentiable", "jvp", "generate_vmap_rule",
            "non_tensor_arguments", "broadcasting", "straight_through_estimator"} <= features
    caught_by = {check for c in WRONG for e in c.expect for check in e.checks}
    assert {"gradcheck", "gradgradcheck", "forward_ad", "reference_output", "reentrant",
            "backward_reference"} <= caught_by
    assert all("\n" not in c.describe() for c in FUNCTIONS)


def test_an_expected_verdict_must_name_a_check(monkeypatch):
    from suite.cases import functions as catalogue

    typo = FunctionCase("x", ok.CubeSavedInput, lambda: (torch.ones(1),), "typo", expect=(fails("gradchek", why="typo"),))
    monkeypatch.setattr(catalogue, "CASES", [typo])
    with pytest.raises(ValueError, match="unknown checks"):
        next(verdicts("cpu", True))


def test_once_differentiable_double_backward_raises_and_that_is_a_pass():
    check = _report(FUNCTIONS.get("once_differentiable")).check("once_differentiable")
    assert check.verdict == "pass" and "once_differentiable" in check.detail


def test_the_report_prints_a_table_with_one_row_per_check():
    report = _report(FUNCTIONS.get("wrong_scale"))
    table = str(report).splitlines()
    assert table[0].startswith("check_function(CubeWrongScale): FAILS gradcheck")
    assert table[1].split() == ["check", "verdict", "detail"]
    assert len(table) == 2 + len(CHECK_NAMES)
    assert any(line.split()[:2] == ["gradcheck", "fail"] for line in table[2:])


def test_assert_function_conforms_raises_with_the_table():
    case = FUNCTIONS.get("swapped_gradients")
    with pytest.raises(AssertionError, match=r"(?s)check_function\(SwappedGradients\).*gradcheck +fail"):
        assert_function_conforms(case.function, case.inputs(), reference=case.reference)
    good = FUNCTIONS.get("broadcasting")
    assert assert_function_conforms(good.function, good.inputs()).passed


def test_the_public_names_are_the_battery():
    assert suite.check_function is check_function
    assert suite.assert_function_conforms is assert_function_conforms


class _RaisingForward(Function):
    @staticmethod
    def forward(ctx, x):
        raise ValueError("broken forward")

    @staticmethod
    def backward(ctx, grad):
        return grad


class _RaisingBackward(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        raise ValueError("broken backward")


def test_a_failing_function_is_reported_never_raised():
    x = torch.randn(3, dtype=torch.float64)
    forward = check_function(_RaisingForward, (x,))
    assert forward.check("forward").verdict == "fail" and "broken forward" in forward.check("forward").detail
    assert all(c.verdict == "skip" for c in forward.checks[1:])
    backward = check_function(_RaisingBackward, (x,))
    assert backward.check("gradcheck").verdict == "fail" and "broken backward" in backward.check("gradcheck").detail


def test_only_a_function_class_and_a_tuple_are_accepted():
    with pytest.raises(TypeError, match="Function subclass"):
        check_function(torch.sin, (torch.ones(2),))
    with pytest.raises(TypeError, match="tuple"):
        check_function(ok.CubeSavedInput, [torch.ones(2)])


def test_float32_inputs_are_checked_in_float64_and_left_untouched():
    x = torch.randn(3, 4)  # float32: gradcheck's finite differences would be noise
    before = x.clone()
    assert check_function(ok.MulInPlace, (x, 2.5)).passed  # an in-place Function, too
    assert x.dtype == torch.float32 and torch.equal(x, before)


def test_function_verdicts_pass_for_the_whole_catalogue():
    records = list(verdicts("cpu", quick=True))
    assert {r["case"] for r in records} == set(FUNCTIONS.names())
    assert all(r["suite"] == "function" and r["kind"] == "conformance" for r in records)
    assert [r for r in records if not r["passed"]] == []
    assert all(r["detail"].startswith("fail") for r in records if r["case"] in {c.name for c in WRONG})


@pytest.mark.parametrize(("function", "caught_by", "what"), [
    (bad.CubeWrongScale, "vmap", "a flaw declared for a check that does not catch it"),
    (ok.CubeSavedInput, "gradcheck", "a correct Function declared flawed"),
    (bad.CubeWrongScale, "", "a flaw left undeclared"),
])
def test_a_verdict_record_fails_when_the_outcome_is_not_the_declared_one(monkeypatch, function, caught_by, what):
    from suite.cases import functions as catalogue

    inputs = lambda: (torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),)  # noqa: E731
    expect = (fails(caught_by, why=what),) if caught_by else ()
    monkeypatch.setattr(catalogue, "CASES", [FunctionCase("x", function, inputs, what, lambda x: x ** 3, expect=expect)])
    records = list(verdicts("cpu", quick=True))
    assert (caught_by or "gradcheck") in [r["check"] for r in records if not r["passed"]], records


def test_the_pytest_fixture_fails_a_test_with_the_table(pytester):
    pytester.makepyfile(
        """
        import torch
        from suite.cases import function_examples as ok, function_flaws as bad

        def test_good(check_function):
            check_function(ok.CubeSavedInput, (torch.randn(3, dtype=torch.float64),), reference=lambda x: x ** 3)

        def test_bad(check_function):
            check_function(bad.CubeWrongScale, (torch.randn(3, dtype=torch.float64),))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*check_function(CubeWrongScale): FAILS gradcheck*"])


@pytest.mark.gpu
def test_function_verdicts_pass_on_cuda():
    assert [r for r in verdicts("cuda", quick=False) if not r["passed"]] == []


class _Opaque(Function):
    """x**2 whose forward dynamo must not trace (as for a kernel of a C++ extension)."""

    @staticmethod
    @torch.compiler.disable
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_a_function_that_runs_eagerly_under_compile_is_not_compiled_not_a_pass():
    report = check_function(_Opaque, (torch.randn(3, dtype=torch.float64, requires_grad=True),))
    compiled = report.check("compile")
    assert compiled.verdict == "not_compiled" and "the backend received no graph" in compiled.detail
    assert not report.passed and report.failures() == [] and report.not_compiled() == ["compile"]
    assert "NOT COMPILED compile" in str(report) and "FAILS" not in str(report)
