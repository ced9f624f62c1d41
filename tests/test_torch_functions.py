"""Custom Functions PyTorch ships (suite/cases/torch_functions.py) through check_function: each
gets its declared verdict, and what a failing check cannot see is checked another way."""
import warnings

import pytest
import torch
from torch.nn.parallel._functions import Broadcast, Gather
from torch.utils.checkpoint import CheckpointFunction

from suite.cases.expect import FAILS, checks_with, describe
from suite.cases.torch_functions import CASES, GROUP_SIZE, ON_A_GROUP, ON_CUDA, ON_ONE_PROCESS, tanh_layer
from suite.conformance.closeness import mismatch
from suite.conformance.functions.check import check_function
from suite.conformance.functions.collective import compare_blocks


def needing(need):
    return [c for c in CASES if c.needs == need]


def assert_declared_verdict(report, case):
    assert sorted(report.failures()) == sorted(checks_with(case.expect, FAILS)), f"{describe(case.expect)}\n{report}"


@pytest.mark.parametrize("case", needing(ON_ONE_PROCESS), ids=lambda c: c.name)
def test_a_torch_function_gets_its_declared_verdict(case):
    assert_declared_verdict(check_function(case.function, case.inputs(), reference=case.reference), case)


def test_reentrant_checkpoint_fails_only_by_refusing_autograd_grad():
    case = CASES.get("checkpoint_reentrant")
    report = check_function(case.function, case.inputs(), reference=case.reference)
    for name in checks_with(case.expect, FAILS):
        assert "incompatible with .grad()" in report.check(name).detail, report.check(name)
    assert report.check("reference_output").verdict == report.check("grad_per_input").verdict == "pass"


def test_reentrant_checkpoint_gradients_through_backward():
    """What the refused checks would see, through backward(), the one API it supports: the block's
    own gradients; but under create_graph=True they carry no graph (docs/found.md)."""
    x, weight = CASES.get("checkpoint_reentrant").inputs()[2:]
    plain = [t.detach().requires_grad_() for t in (x, weight)]
    cotangent = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():  # backward(create_graph=True) warns of a .grad reference cycle
        warnings.simplefilter("ignore", UserWarning)
        CheckpointFunction.apply(tanh_layer, False, x, weight).backward(cotangent, create_graph=True)
    tanh_layer(*plain).backward(cotangent)
    assert mismatch(x.grad, plain[0].grad) is None and mismatch(weight.grad, plain[1].grad) is None
    assert not x.grad.requires_grad and not weight.grad.requires_grad


def test_dataparallel_functions_refuse_cpu_tensors():
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(AssertionError, match="not implemented for CPU tensors"):
        Broadcast.apply([0], x)
    with pytest.raises(AssertionError, match="not implemented for CPU tensors"):
        Gather.apply(0, 0, x)


@pytest.mark.gpu
@pytest.mark.parametrize("case", needing(ON_CUDA), ids=lambda c: c.name)
def test_a_dataparallel_function_gets_its_declared_verdict(case):
    assert_declared_verdict(check_function(case.function, case.inputs(), reference=case.reference), case)


@pytest.fixture(scope="module")
def group_results():
    """Every collective case, run once on a group of GROUP_SIZE ranks: {name: per-rank results}."""
    from suite.distributed.pool import get_pool
    from suite.distributed.selfcheck import check_collective_function

    pool = get_pool(GROUP_SIZE)
    return {case.name: pool.run(check_collective_function, case.name, timeout=120) for case in needing(ON_A_GROUP)}


@pytest.mark.distributed
@pytest.mark.parametrize("case", needing(ON_A_GROUP), ids=lambda c: c.name)
def test_a_collective_gets_its_declared_verdict_on_every_rank(case, group_results):
    for result in group_results[case.name]:
        assert_declared_verdict(result["report"], case)


@pytest.mark.distributed
@pytest.mark.parametrize("case", needing(ON_A_GROUP), ids=lambda c: c.name)
def test_a_collective_gradient_equals_the_groups_finite_differences(case, group_results):
    check = compare_blocks([result["blocks"] for result in group_results[case.name]])
    assert check.verdict == "pass", check.detail


@pytest.mark.distributed
def test_group_gradcheck_catches_a_backward_that_skips_a_rank(group_results):
    blocks = [result["blocks"] for result in group_results["all_reduce"]]
    blocks[1]["backward"][0] = torch.zeros_like(blocks[1]["backward"][0])  # rank 0's loss never reaches rank 1
    check = compare_blocks(blocks)
    assert check.verdict == "fail" and "d(rank 0's outputs)/d(rank 1's input)" in check.detail
