"""The one expected-outcome type (suite/cases/expect.py) and the one judgement of an outcome against it."""
from types import SimpleNamespace

import pytest

from suite.cases.expect import (Expect, approximate, describe, expectation, fails, not_applicable, not_compiled,
                                outcome, validate)
from suite.cases.parallel import CASES as PARALLEL
from suite.conformance.parallel.equivalence import judge
from suite.conformance.result import meets

SUM_LOSS = fails("equivalence", why="a summed loss", cause="sum_loss")


@pytest.mark.parametrize(("expected", "failed", "cause", "as_declared"), [
    (None, False, None, True),  # no declaration: the check must pass
    (None, True, None, False),
    (SUM_LOSS, True, "sum_loss", True),  # fails, for the declared cause
    (SUM_LOSS, True, "batchnorm", False),  # fails, but for another cause
    (SUM_LOSS, False, None, False),  # must fail and did not
    (fails("gradcheck", why="a flaw"), True, None, True),  # no cause declared: any failure
    (approximate("equivalence", why="the error is the finding"), True, None, True),
])
def test_an_outcome_meets_its_declaration_or_not(expected, failed, cause, as_declared):
    assert meets(expected, failed, cause) is as_declared


RUNS_EAGERLY = not_compiled("equivalence", why="dynamo runs an LSTM eagerly")


@pytest.mark.parametrize(("expected", "failed", "compiled_nothing", "as_declared"), [
    (None, False, True, False),  # undeclared, a check that compiled nothing is not a pass
    (RUNS_EAGERLY, False, True, True),
    (RUNS_EAGERLY, False, False, False),  # declared not compiled, and it compiled
    (RUNS_EAGERLY, True, False, False),  # nor may it fail instead
    (SUM_LOSS, False, True, False),  # an expected failure is not met by compiling nothing
])
def test_not_compiled_is_met_only_where_declared(expected, failed, compiled_nothing, as_declared):
    assert meets(expected, failed, not_compiled=compiled_nothing) is as_declared
    assert outcome((RUNS_EAGERLY,), "equivalence") == "not_compiled"
    assert str(RUNS_EAGERLY) == "not compiled equivalence: dynamo runs an LSTM eagerly"


def test_a_parallel_case_diverging_for_another_cause_is_not_as_expected():
    case = PARALLEL.get("mlp_sum_loss_w2")
    report = SimpleNamespace(verdict="fail", reason="batchnorm", detail="diverges at step 1", max_abs_diff={})
    ok, detail = judge(case, report)
    assert not ok and detail.startswith("NOT as expected to diverge from sum_loss")
    assert judge(case, SimpleNamespace(verdict="fail", reason="sum_loss", detail="", max_abs_diff={}))[0]


def test_an_expectation_is_scoped_to_its_checks_and_says_why():
    expect = (not_applicable("gradgradcheck", "forward_ad", why="first order only"),)
    assert outcome(expect, "gradgradcheck") == "not_applicable" and outcome(expect, "gradcheck") == "passes"
    assert expectation((fails(why="every check"),), "anything").outcome == "fails"
    assert describe(expect) == "not applicable gradgradcheck, forward_ad: first order only"
    assert describe(()) == "passes every check"


def test_a_malformed_declaration_is_refused():
    with pytest.raises(ValueError, match="one of"):
        Expect("flaky", why="sometimes")
    with pytest.raises(ValueError, match="says why"):
        fails("gradcheck", why="")
    with pytest.raises(ValueError, match="unknown checks"):
        validate("case", (fails("gradchek", why="typo"),), ("gradcheck",))
    with pytest.raises(TypeError, match="tuple of Expect"):
        validate("case", fails("gradcheck", why="not in a tuple"), ("gradcheck",))
    with pytest.raises(ValueError, match="2 expectations"):
        expectation((fails(why="all"), not_applicable("vmap", why="none")), "vmap")
