"""The standard workloads (suite.cases.workloads): declared once, seen by every consumer."""
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from suite import time_model
from suite.cases.models import CASES as MODELS, article_models, models_for, standard_models
from suite.cli import main
from suite.errors import SuiteError
from suite.timing.flops import CUSTOM_FORMULAS, count_flops
from suite.timing.plan import VARIANT_BY_ID, iter_setups, variant_applies


def test_seven_standard_workloads_each_with_a_mini_config_beside_the_article_models():
    full, mini = standard_models("full"), standard_models("mini")
    assert len(article_models()) == 3 and len(full) >= 7
    assert sorted(MODELS.get(name).full_name for name in mini) == sorted(full)
    for name in full:  # the mini is the same workload made small, never a bigger one
        big, small = MODELS.get(name), MODELS.get(f"{name}_mini")
        assert small.family == big.family == "standard" and small.loss_fn is big.loss_fn
        assert count_flops(small, "eval", 1) < count_flops(big, "eval", 1)


def test_list_shows_the_standard_workloads_as_models(capsys):
    assert main(["list", "--kind", "model"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert listed == MODELS.names() and {"resnet50", "gpt2_lm", "wav2vec2_base_mini"} <= set(listed)


def test_a_mini_config_trains_one_step_with_finite_gradients_everywhere(workload_spec):
    model = workload_spec.build(seed=0)
    inputs, labels = workload_spec.example_batch(2)
    loss = workload_spec.loss_fn(model(inputs), labels)
    loss.backward()
    assert torch.isfinite(loss)
    # An untrained model starts near chance: a broken head or initialisation starts far above it.
    assert loss.item() < 5 * math.log(workload_spec.num_classes)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_language_models_take_token_ids_and_label_every_position():
    spec = MODELS.get("gpt2_lm_mini")
    ids, labels = spec.example_batch(3)
    assert ids.dtype == torch.long and ids.shape == labels.shape == (3, spec.tokens_per_sample)
    assert int(ids.max()) < spec.num_classes
    model = spec.build(seed=0)
    assert model.head.weight is model.tokens.weight  # tied, as GPT-2's


def test_train_flops_are_about_three_times_eval_for_every_workload(workload_spec):
    train, evaluation = (count_flops(workload_spec, mode, 2) for mode in ("train", "eval"))
    assert 2.0 < train / evaluation < 4.0, (train, evaluation)


@pytest.mark.parametrize("groups", [1, 16])
def test_a_grouped_convolution_backward_costs_two_forwards(groups):
    conv = nn.Conv2d(16, 16, 3, groups=groups)
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS) as counter:
        out = conv(x)
        forward = counter.get_total_flops()
        out.sum().backward()
    assert counter.get_total_flops() == 3 * forward
    if groups == 1:  # where torch's own formula is right, the suite's agrees with it
        with FlopCounterMode(display=False) as plain:
            conv(x).sum().backward()
        assert plain.get_total_flops() == counter.get_total_flops()


def test_a_run_times_the_article_models_on_cpus_and_the_full_workloads_on_gpus():
    assert models_for("cpu") == article_models()
    assert models_for("cuda") == article_models() + standard_models("full")
    assert models_for("cpu", "standard") == standard_models("mini")
    assert models_for("cpu", "all") == article_models() + standard_models("mini")
    assert {c.model for c in iter_setups(["cpu"], quick=True)} == set(article_models())
    with pytest.raises(SuiteError, match="unknown workload set 'bogus'"):
        models_for("cpu", "bogus")


def test_channels_last_applies_to_image_models_only():
    channels_last = VARIANT_BY_ID["cuda-channels_last"]
    assert variant_applies(channels_last, MODELS.get("resnet50"))
    assert not variant_applies(channels_last, MODELS.get("gpt2_lm"))
    assert not variant_applies(channels_last, MODELS.get("wav2vec2_base"))
    assert variant_applies(VARIANT_BY_ID["cuda"], MODELS.get("gpt2_lm"))


def test_a_language_model_figure_is_also_in_tokens_per_second():
    record = time_model("lstm_lm_mini", mode="eval", quick=True, batch_size=4, min_run_time=0.05)
    assert record["tokens_per_s"] == pytest.approx(record["throughput"] * 35)
    assert time_model("speech_cnn", mode="eval", quick=True, batch_size=4, min_run_time=0.05)["tokens_per_s"] is None


def test_an_unknown_workload_set_is_a_one_line_error(capsys):
    assert main(["run", "--dry-run", "--workloads", "bogus"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown workload set" in err


def test_a_serving_figure_times_each_call_at_batch_one_for_its_percentiles():
    record = time_model("speech_cnn", mode="serve", quick=True, min_run_time=0.05)
    assert record["batch_size"] == 1 and record["steps_per_sample"] == 1 and len(record["samples"]) >= 30
    assert record["latency_p50_s"] <= record["latency_p90_s"] <= record["latency_p99_s"] <= max(record["samples"])
    ordered = sorted(record["samples"])  # nearest rank: the 99th percentile of 30 to 100 calls is the slowest
    assert record["latency_p99_s"] == ordered[math.ceil(0.99 * len(ordered)) - 1]
    with pytest.raises(SuiteError, match="one device, eager"):
        time_model("speech_cnn", mode="serve", setup="cpu-ddp", quick=True)


def test_only_the_models_people_serve_get_serving_figures():
    served = {c.model for c in iter_setups(["cpu"], quick=True, models=standard_models("mini")) if c.mode == "serve"}
    assert served == {name for name in standard_models("mini") if MODELS.get(name).serving}
    assert "resnet50_mini" in served and "gpt2_lm_mini" not in served
