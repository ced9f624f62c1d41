import pytest
import torch

from suite import cases
from suite.cases.models import CASES as MODELS, article_models
from suite.cases.registry import Registry
from suite.errors import UnknownCaseError


def test_the_articles_three_models_are_registered():
    assert article_models() == ["mnist_cnn", "cifar10_lenet", "speech_cnn"] == MODELS.names()[:3]


def test_forward_gives_one_row_of_class_scores_per_sample(model_spec):
    x, y = model_spec.example_batch(5)
    out = model_spec.build(seed=0)(x)
    assert out.shape == (5, model_spec.num_classes)
    assert torch.isfinite(model_spec.loss_fn(out, y))


def test_mnist_fc1_takes_the_9216_features_a_28x28_image_gives():
    assert MODELS.get("mnist_cnn").build().fc1.in_features == 64 * 12 * 12


def test_speech_frontend_turns_a_one_second_clip_into_the_10x10_map_fc1_needs():
    spec = MODELS.get("speech_cnn")
    features = spec.frontend()(torch.randn(1, 16_000))
    assert tuple(features.shape) == spec.input_shape == (1, 10, 10)


def test_article_optimizer_settings():
    lrs = {s.name: (s.optimizer, s.optimizer_kwargs["lr"], s.optimizer_kwargs["momentum"]) for s in MODELS.select(article_models())}
    assert lrs == {"mnist_cnn": (torch.optim.SGD, 0.01, 0.9),
                   "cifar10_lenet": (torch.optim.SGD, 0.001, 0.9),
                   "speech_cnn": (torch.optim.SGD, 0.01, 0.9)}


def test_every_correction_names_a_declared_defect(model_spec):
    defects = cases.registry("defect")
    for name in model_spec.corrections:
        assert name in defects


def test_unknown_name_error_lists_the_valid_ones():
    with pytest.raises(UnknownCaseError, match="unknown model 'resnet'; valid: bert_base_mlm, .*mnist_cnn, .*speech_cnn"):
        MODELS.get("resnet")


def test_unknown_kind_is_an_error():
    with pytest.raises(UnknownCaseError, match="unknown case kind 'nope'"):
        cases.registry("nope")


def test_a_name_cannot_be_declared_twice():
    reg = Registry("model")
    reg.add(MODELS.get("mnist_cnn"))
    with pytest.raises(ValueError, match="declared twice"):
        reg.add(MODELS.get("mnist_cnn"))


# One case of each kind, picked by hand from the declarations in suite/cases/.
ONE_CASE_OF_EACH_KIND = {"model": "mnist_cnn", "defect": "mnist_fc1_input_size", "op": "conv2d",
                         "function": "saved_input", "torch_function": "checkpoint_reentrant",
                         "parallel": "mnist_cnn_w2", "resume": "fsdp_adam_warmup_2to4",
                         "variant": "cpu-ddp", "compile": "mnist_cnn_aot_eager_train",
                         "limit": "gemm", "fleet_rule": "limit"}


def test_every_kind_reads_the_registry_that_declares_its_cases():
    assert cases.kinds() == list(ONE_CASE_OF_EACH_KIND)
    for kind, name in ONE_CASE_OF_EACH_KIND.items():
        reg = cases.registry(kind)  # the wrong module's registry would not know the name
        assert reg.kind == kind and reg.get(name).kind == kind
        assert len({type(case) for case in reg}) == 1  # one type of case a registry
