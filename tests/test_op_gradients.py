"""Gradient conformance of every registered op, parametrized from suite.cases.ops."""
import pytest
import torch

from suite.cases import function_flaws as bad
from suite.cases.expect import NOT_APPLICABLE, checks_with, not_applicable
from suite.cases.ops import CASES as OPS, OP_CHECKS, OpCase
from suite.cases.samples import away_from, distinct, randn
from suite.conformance.autograd.ops import check_op
from suite.conformance.autograd.verdicts import verdicts

APPLICABLE = [(case, check) for case in OPS for check in case.checks()]
DECLARED_EXCEPTIONS = [(case, check) for case in OPS for check in checks_with(case.expect, NOT_APPLICABLE)]


def _id(pair):
    return f"{pair[0].name}-{pair[1]}"


@pytest.mark.parametrize("case, check", APPLICABLE, ids=map(_id, APPLICABLE))
def test_op_gradient_check(case, check):
    result = check_op(case, check)
    assert result.verdict == "pass", result.detail


@pytest.mark.parametrize("case, check", DECLARED_EXCEPTIONS, ids=map(_id, DECLARED_EXCEPTIONS))
def test_declared_exception_still_holds(case, check):
    """A declared exception is data about PyTorch: when PyTorch gains the derivative, this fails
    and the declaration must go."""
    result = check_op(case, check, honour_expect=False)
    assert result.verdict == "fail", f"{case.name} now passes {check}: remove it from `expect`"
    assert check_op(case, check).verdict == "skip"


@pytest.mark.parametrize("name", ["conv2d", "linear", "relu", "max_pool2d", "log_softmax", "cross_entropy"])
def test_fast_mode_agrees_on_the_article_ops(name):
    for check in ("gradcheck", "gradgradcheck"):
        assert check_op(OPS.get(name), check, fast_mode=True).verdict == "pass"


def test_the_registry_covers_the_article_ops_and_forty_more_cases():
    needed = {"conv2d", "linear", "relu", "max_pool2d", "flatten", "view", "log_softmax", "nll_loss",
              "cross_entropy", "mse_loss"}
    assert needed <= set(OPS.names())
    assert len(OPS) >= 40
    families = {case.family for case in OPS}
    assert {"elementwise", "reduction", "matrix product", "indexing", "broadcasting", "in-place",
            "normalisation"} <= families


def test_samples_are_float64_seeded_and_describe_is_one_line():
    for case in OPS:
        first, again, other = case.samples(0), case.samples(0), case.samples(1)
        floats = [a for a in first if isinstance(a, torch.Tensor) and a.is_floating_point()]
        assert floats and all(a.dtype == torch.float64 for a in floats), case.name
        assert any(a.requires_grad for a in floats), case.name
        for a, b in zip(first, again):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b), case.name
        assert any(isinstance(a, torch.Tensor) and a.requires_grad and not torch.equal(a, b)
                   for a, b in zip(first, other)), f"{case.name}: the seed changes nothing"
        assert "\n" not in case.describe() and case.describe()


def test_kink_avoiding_samples_keep_their_distance():
    g = torch.Generator().manual_seed(0)
    x = away_from(g, 1000, points=(-0.5, 0.5), margin=0.1)
    assert ((x + 0.5).abs().min() >= 0.1) and ((x - 0.5).abs().min() >= 0.1)
    y = distinct(g, 4, 4, 4)
    assert y.unique().numel() == y.numel()


def test_an_unknown_check_cannot_be_declared():
    with pytest.raises(ValueError, match="unknown checks"):
        OpCase("x", torch.neg, lambda g: (randn(g, 2),), "elementwise", expect=(not_applicable("gradchek", why="typo"),))


def test_a_wrong_gradient_fails_gradcheck_saying_by_how_much():
    case = OpCase("cube_wrong_scale", bad.CubeWrongScale.apply, lambda g: (randn(g, 3),), "custom")
    result = check_op(case, "gradcheck")
    assert result.verdict == "fail"
    assert "largest gap" in result.detail and "numerical" in result.detail


def test_a_jvp_that_disagrees_with_the_backward_fails_jvp_vjp():
    case = OpCase("sin_wrong_jvp", bad.SinWrongJvp.apply, lambda g: (randn(g, 3),), "custom")
    result = check_op(case, "jvp_vjp")
    assert result.verdict == "fail" and "gap" in result.detail


def test_quick_verdicts_are_records_of_every_op_and_model():
    records = list(verdicts("cpu", quick=True))
    assert {r["case"] for r in records} >= set(OPS.names())
    assert all(r["kind"] == "conformance" and r["suite"] == "autograd" and r["device"] == "cpu" for r in records)
    assert all(set(r) == {"kind", "suite", "case", "check", "device", "passed", "detail", "seconds"} for r in records)
    failed = [f"{r['case']}/{r['check']}: {r['detail']}" for r in records if not r["passed"]]
    assert not failed
    assert set(OP_CHECKS) >= {r["check"] for r in records if r["case"] in OPS}


@pytest.mark.gpu
def test_op_and_model_verdicts_pass_on_cuda():
    failed = [f"{r['case']}/{r['check']}: {r['detail']}" for r in verdicts("cuda", quick=False) if not r["passed"]]
    assert not failed
