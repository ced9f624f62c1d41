"""gradcheck of the article's models w.r.t. input and parameters, from the models registry."""
import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.gradcheck import GradcheckError

from suite.cases import function_flaws as bad
from suite.cases.expect import expectation
from suite.cases.models import CASES as MODELS, article_models, standard_models
from suite.conformance.autograd.models import (MODEL_CHECKS, KinkRecorder, check_model, full_subset_names,
                                               model_results)


# mnist_cnn's full-mode check is the matrix's costly one: 4 to 7 s of a default test run, against
# about 1 s for each other. The default run keeps the other five; it runs under `slow`, and in every
# full run's autograd conformance.
@pytest.mark.parametrize("name, check", [
    pytest.param(name, check, id=f"{name}-{check}",
                 marks=pytest.mark.slow if (name, check) == ("mnist_cnn", "gradcheck_full_subset") else ())
    for name in article_models() for check in MODEL_CHECKS])
def test_model_gradients(name, check):
    result = check_model(MODELS.get(name), check)
    assert result.verdict == "pass", result.detail


def test_the_fast_check_covers_every_parameter_and_the_input(model_spec):
    model = model_spec.build(seed=0)
    elements = sum(p.numel() for p in model.parameters()) + 2 * int(torch.tensor(model_spec.input_shape).prod())
    assert f"{elements:,} elements" in check_model(model_spec, "gradcheck_fast").detail


def test_the_full_subset_is_every_bias_and_the_first_weight(model_spec):
    model = model_spec.build(seed=0)
    names = full_subset_names(model)
    params = dict(model.named_parameters())
    assert names[0] == next(iter(params)) and names[0].endswith("weight")
    assert set(names[1:]) == {n for n in params if n.endswith("bias")}
    assert sum(params[n].numel() for n in names) < 700  # what keeps full mode to seconds


class _TinyNet(nn.Module):
    """Takes the speech model's input; its last step is a custom Function with a wrong backward.
    Small (303 parameters) because a failing full-mode check is as slow as a passing one."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(100, 3)

    def forward(self, x):
        return bad.CubeWrongScale.apply(self.fc(torch.flatten(x, 1)))


def test_a_model_with_a_wrong_gradient_fails_both_checks():
    broken = dataclasses.replace(MODELS.get("speech_cnn"), name="broken", factory=_TinyNet)
    for check in MODEL_CHECKS:
        result = check_model(broken, check)
        assert result.verdict == "fail" and "seed 0" in result.detail, result


def test_the_kink_recorder_sees_a_finite_difference_cross_relu_zero():
    x = torch.tensor([1e-7, 0.5], dtype=torch.float64, requires_grad=True)
    recorder = KinkRecorder()
    with recorder:
        F.relu(x)
    with recorder, pytest.raises(GradcheckError):
        torch.autograd.gradcheck(F.relu, (x,), eps=1e-6)
    assert recorder.crossed(calls_per_forward=1)


def test_the_kink_recorder_sees_a_max_pool_tie_change_winner():
    x = torch.tensor([[[[1.0, 1.0 + 1e-8], [0.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    recorder = KinkRecorder()
    with recorder:
        F.max_pool2d(x, 2)
    with recorder, pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda t: F.max_pool2d(t, 2), (x,), eps=1e-6)
    assert recorder.crossed(calls_per_forward=1)


def test_the_kink_recorder_stays_quiet_away_from_kinks():
    x = torch.tensor([0.3, -0.5], dtype=torch.float64, requires_grad=True)
    recorder = KinkRecorder()
    with recorder:
        F.relu(x)
        torch.autograd.gradcheck(F.relu, (x,))
    assert len(recorder.pieces) > 3 and not recorder.crossed(calls_per_forward=1)


def test_quick_model_results_run_only_fast_mode():
    results = list(model_results(quick=True))
    assert [name for name, _ in results] == article_models()
    assert all(r.name == "gradcheck_fast" and r.passed for _, r in results)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in ("lstm_lm_mini", "resnet50_mini") else pytest.mark.slow)
                                  for n in standard_models("mini")])
def test_a_workloads_mini_config_passes_the_fast_float64_gradcheck_or_says_why_not(name):
    ((model, result),) = model_results(names=[name])
    declared = expectation(MODELS.get(name).expect, "gradcheck_fast")
    assert model == name and result.name == "gradcheck_fast"
    if declared is not None:  # a ReLU network this size: inconclusive at its kinks, declared, never run
        assert result.verdict == "skip" and declared.why in result.detail
    else:
        assert result.verdict == "pass", result.detail
        assert ("input and all" in result.detail) == MODELS.get(name).input_dtype.is_floating_point
