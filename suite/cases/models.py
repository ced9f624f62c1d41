"""The source article's three models, as declared cases.

Each `ModelSpec` says everything a consumer needs: how to build the network, what one input
sample looks like, the loss and optimizer the article trains it with, and the batch size to
use per device kind. The networks are the article's own (section 3.2.1 and 4.1-4.2), with
the corrections listed in `corrections` (ids in suite.cases.defects).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.registry import Registry

SAMPLE_RATE = 16_000  # Speech Commands clips: 1 s at 16 kHz


class MnistNet(nn.Module):
    """Section 3.2.1's MNIST net; fc1 takes 64*12*12 = 9216 features, what 28x28 input gives."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


class CifarLeNet(nn.Module):
    """Section 4.1's CIFAR-10 LeNet, unchanged."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class SpeechNet(nn.Module):
    """Section 4.2's Speech Commands net, unchanged: it needs a 1x10x10 feature map."""

    def __init__(self, num_classes: int = 30):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(64 * 6 * 6, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def speech_frontend() -> nn.Module:
    """1 s, 16 kHz clip (1, 16000) -> MFCC feature map (1, 10, 10) for SpeechNet.

    Ten non-overlapping 100 ms windows (n_fft = hop = 1600, no centre padding) give ten frames;
    40 mel bands reduced to 10 cepstral coefficients give ten rows. This keeps the article's
    network exactly as written; the price is coarse time resolution (see README).
    """
    import torchaudio  # only the speech model needs it

    return torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE,
        n_mfcc=10,
        melkwargs={"n_fft": 1600, "hop_length": 1600, "n_mels": 40, "center": False},
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    dataset: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    num_classes: int
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: type[torch.optim.Optimizer]
    optimizer_kwargs: dict
    batch_sizes: dict[str, int]  # per device kind
    source: str  # where in the article it is
    input_dtype: torch.dtype = torch.float32
    frontend: Callable[[], nn.Module] | None = None  # raw data -> input_shape, when not identity
    frontend_note: str = ""
    corrections: tuple[str, ...] = field(default=())
    kind: str = "model"

    def build(self, seed: int | None = None) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        return self.factory()

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return self.optimizer(params, **self.optimizer_kwargs)

    def batch_size(self, device_kind: str) -> int:
        return self.batch_sizes.get(device_kind, self.batch_sizes["cpu"])

    def example_batch(self, batch_size: int, seed: int = 0, device="cpu"):
        """Random inputs and labels of the right shape, dtype and range (no learnable signal)."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((batch_size, *self.input_shape), generator=g, dtype=self.input_dtype)
        y = torch.randint(0, self.num_classes, (batch_size,), generator=g)
        return x.to(device), y.to(device)

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return f"{self.title}; input {shape}, {self.num_classes} classes, {self.loss_fn.__name__}"


_SGD = torch.optim.SGD
CASES: Registry[ModelSpec] = Registry("model")

CASES.add(ModelSpec(
    name="mnist_cnn",
    title="MNIST CNN (article 3.2.1)",
    dataset="mnist",
    factory=MnistNet,
    input_shape=(1, 28, 28),
    num_classes=10,
    loss_fn=F.nll_loss,
    optimizer=_SGD,
    optimizer_kwargs={"lr": 0.01, "momentum": 0.9},
    batch_sizes={"cpu": 100, "cuda": 1024},
    source="section 3.2.1-3.2.2",
    corrections=("mnist_fc1_input_size", "mnist_net_recreated_each_step", "mnist_no_totensor"),
))

CASES.add(ModelSpec(
    name="cifar10_lenet",
    title="CIFAR-10 LeNet (article 4.1)",
    dataset="cifar10",
    factory=CifarLeNet,
    input_shape=(3, 32, 32),
    num_classes=10,
    loss_fn=F.cross_entropy,
    optimizer=_SGD,
    optimizer_kwargs={"lr": 0.001, "momentum": 0.9},
    batch_sizes={"cpu": 100, "cuda": 1024},
    source="section 4.1",
    corrections=("cross_entropy_loss_missing",),
))

CASES.add(ModelSpec(
    name="speech_cnn",
    title="Speech Commands CNN (article 4.2)",
    dataset="speech_commands",
    factory=SpeechNet,
    input_shape=(1, 10, 10),
    num_classes=30,
    # The article's (corrected) cross_entropy on log_softmax output equals nll_loss:
    # log_softmax is idempotent.
    loss_fn=F.cross_entropy,
    optimizer=_SGD,
    optimizer_kwargs={"lr": 0.01, "momentum": 0.9},
    batch_sizes={"cpu": 100, "cuda": 1024},
    source="section 4.2",
    frontend=speech_frontend,
    frontend_note="1 s 16 kHz clip -> MFCC: 10 coefficients (40 mel bands) x 10 frames of 100 ms",
    corrections=("speech_fc1_needs_10x10", "speech_clip_length", "cross_entropy_loss_missing",
                 "librosa_calls_missing"),
))
