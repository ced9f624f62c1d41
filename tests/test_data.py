"""The real loaders read files in the real on-disk formats; the stand-ins match their shapes."""
import pytest
import torch

from suite import data
from suite.cases.models import CASES as MODELS
from suite.fakedata import write_cifar10, write_mnist, write_speech_commands


def test_mnist_idx_files_load_as_normalised_tensors(tmp_path):
    write_mnist(tmp_path, n_train=12, n_test=5)
    train = data.real_dataset(MODELS.get("mnist_cnn"), tmp_path)
    test = data.real_dataset(MODELS.get("mnist_cnn"), tmp_path, split="test")
    x, y = train[3]
    assert (len(train), len(test)) == (12, 5)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3


def test_cifar10_python_batches_load_after_their_checksums_pass(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    md5 = write_cifar10(tmp_path, n_per_batch=4)
    # torchvision refuses files whose MD5 differs from the official archive's; point it at ours.
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setitem(CIFAR10.meta, "md5", md5["batches.meta"])
    train = data.real_dataset(MODELS.get("cifar10_lenet"), tmp_path)
    x, y = train[7]
    assert len(train) == 20 and x.shape == (3, 32, 32) and y == 3
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_cifar10_files_with_unofficial_checksums_are_refused(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(data.DataUnavailableError, match="CIFAR-10 not found"):
        data.real_dataset(MODELS.get("cifar10_lenet"), tmp_path)


def test_speech_commands_wav_files_become_10x10_features(tmp_path):
    write_speech_commands(tmp_path, labels=("yes", "no"), clips_per_label=3, seconds=0.7)
    spec = MODELS.get("speech_cnn")
    train = data.real_dataset(spec, tmp_path)
    test = data.real_dataset(spec, tmp_path, split="test")
    assert (len(train), len(test)) == (4, 2)
    labels = sorted(train[i][1] for i in range(len(train)))
    index = data.SPEECH_COMMANDS_V001_LABELS.index
    assert labels == sorted([index("no")] * 2 + [index("yes")] * 2)
    features, _ = train[0]
    assert features.shape == spec.input_shape and torch.isfinite(features).all()


def test_v001_has_thirty_distinct_words():
    labels = data.SPEECH_COMMANDS_V001_LABELS
    assert len(set(labels)) == 30 == MODELS.get("speech_cnn").num_classes


def test_short_clips_are_padded_and_long_ones_cut():
    assert data.fix_length(torch.ones(1, 100), 160).shape == (1, 160)
    assert data.fix_length(torch.ones(1, 200), 160).shape == (1, 160)
    assert data.fix_length(torch.ones(1, 100), 160)[0, 100:].abs().sum() == 0


def test_missing_data_is_a_clear_error_and_never_downloads(model_spec, tmp_path):
    with pytest.raises(data.DataUnavailableError, match="not found under"):
        data.real_dataset(model_spec, tmp_path)
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "MNIST"])  # MNIST makes its empty folder


def test_without_real_data_the_synthetic_stand_in_is_used(model_spec, tmp_path):
    ds, source = data.dataset(model_spec, root=tmp_path, synthetic_size=40)
    x, y = ds[0]
    assert source == "synthetic" and len(ds) == 40
    assert x.shape == model_spec.input_shape and x.dtype == model_spec.input_dtype
    labels = ds.tensors[1]
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < model_spec.num_classes


def test_synthetic_classes_are_separable_by_their_means(model_spec):
    """A nearest-class-mean classifier fitted on the train split beats chance on the test split."""
    train = data.synthetic_dataset(model_spec, size=20 * model_spec.num_classes)
    test = data.synthetic_dataset(model_spec, size=200, split="test")
    (xs, ys), (xt, yt) = train.tensors, test.tensors
    means = torch.stack([xs[ys == c].mean(0) for c in range(model_spec.num_classes)]).flatten(1)
    predicted = torch.cdist(xt.flatten(1), means).argmin(1)
    assert (predicted == yt).float().mean() > 0.9


def test_synthetic_data_is_reproducible(model_spec):
    a = data.synthetic_dataset(model_spec, size=8, seed=3).tensors
    b = data.synthetic_dataset(model_spec, size=8, seed=3).tensors
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
