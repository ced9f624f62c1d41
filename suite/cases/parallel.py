"""Declared data-parallel cases: DDP configurations that must (or must not) equal one process.

Each case names a module-level model factory, loss and optimizer, the DDP options, how data
reaches the ranks (scheme, accumulate) and the verdict the checker must reach: "equivalent",
or "diverges" with the known reason (sum_loss, batchnorm, dropout), so that the checker's
power to see a divergence is tested as well as its silence when there is none.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.models import CASES as MODELS
from suite.cases.registry import Registry

FEATURES, CLASSES = 8, 4  # the small MLPs' input width and number of classes


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def deep_mlp() -> nn.Module:
    """Eight layers: with a tiny bucket_cap_mb every parameter gets a bucket of its own."""
    layers = [nn.Linear(FEATURES, 32), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Linear(32, 32), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(32, CLASSES))


class MlpWithUnusedLayer(nn.Module):
    """`unused` never takes part in forward: DDP needs find_unused_parameters (or a static graph)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(FEATURES, 16)
        self.unused = nn.Linear(16, 16)
        self.out = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def batchnorm_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, CLASSES))


def sync_batchnorm_mlp() -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(batchnorm_mlp())


def dropout_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, CLASSES))


def cross_entropy_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target, reduction="sum")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class and its settings: a picklable `params -> optimizer` that reads well."""

    optimizer: type
    kwargs: dict

    def __call__(self, params) -> torch.optim.Optimizer:
        return self.optimizer(params, **self.kwargs)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.optimizer.__name__}({args})"


sgd_momentum = OptimizerSpec(torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})
adam = OptimizerSpec(torch.optim.Adam, {"lr": 1e-3})


def _article_optimizer(model_name: str) -> OptimizerSpec:
    spec = MODELS.get(model_name)
    return OptimizerSpec(spec.optimizer, spec.optimizer_kwargs)


@dataclass(frozen=True)
class ParallelCase:
    name: str
    title: str  # the model, in words
    model: Callable[[], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: Callable  # params -> optimizer
    world_size: int
    input_shape: tuple[int, ...]  # one sample
    num_classes: int
    shard_size: int = 4  # samples per rank and step
    steps: int = 3
    ddp_kwargs: dict = field(default_factory=dict)
    scheme: str = "shards"  # shards, uneven (Join) or sampler; see suite.conformance.parallel.sharding
    accumulate: int = 1  # micro-batches per step, all but the last under no_sync()
    rescale_loss: bool = False  # multiply each rank's loss by the world size
    expected: str = "equivalent"  # or "diverges"
    expected_reason: str = ""  # sum_loss, batchnorm or dropout when expected == "diverges"
    quick: bool = False  # part of `torchsuite run --quick`
    gpus_needed: int = 0
    seed: int = 0
    family: str = ""  # the configuration without its world size; torchrun runs one per family
    kind: str = "parallel"

    def __post_init__(self):
        if (self.expected == "diverges") != bool(self.expected_reason):
            raise ValueError(f"{self.name}: a divergence, and only a divergence, needs a reason")

    def data(self, world_size: int | None = None) -> tuple[list, list]:
        """One global batch per step (shard_size per rank); for the sampler scheme, a data set
        one sample short of equal shares, so that DistributedSampler has to pad."""
        world_size = world_size or self.world_size
        size = self.shard_size * world_size
        generator = torch.Generator().manual_seed(self.seed)
        count = 1 if self.scheme == "sampler" else self.steps
        if self.scheme == "sampler":
            size -= 1
        inputs = [torch.randn((size, *self.input_shape), generator=generator) for _ in range(count)]
        targets = [torch.randint(0, self.num_classes, (size,), generator=generator) for _ in range(count)]
        return inputs, targets

    def describe(self) -> str:
        options = [f"{k}={v}" for k, v in self.ddp_kwargs.items()]
        if self.scheme != "shards":
            options.append({"uneven": "uneven inputs under Join",
                            "sampler": "DistributedSampler with padding"}[self.scheme])
        if self.accumulate > 1:
            options.append(f"{self.accumulate} micro-batches, no_sync")
        if self.rescale_loss:
            options.append("loss x world size")
        verdict = self.expected + (f" ({self.expected_reason})" if self.expected_reason else "")
        optimizer = getattr(self.optimizer, "__name__", None) or str(self.optimizer)
        return (f"{self.title}, {self.loss.__name__}, {optimizer}, {self.world_size} ranks x "
                f"{self.shard_size}, {self.steps} steps{''.join(', ' + o for o in options)}: {verdict}")


CASES: Registry[ParallelCase] = Registry("parallel")


def _mlp(name: str, world_sizes=(2, 3), quick=False, **fields) -> None:
    defaults = dict(title="MLP 8-16-4", model=tiny_mlp, loss=F.cross_entropy, optimizer=sgd_momentum,
                    input_shape=(FEATURES,), num_classes=CLASSES)
    for world_size in world_sizes:
        CASES.add(ParallelCase(name=f"{name}_w{world_size}", world_size=world_size, family=name,
                               quick=quick and world_size == 2, **{**defaults, **fields}))


def _article_model(model_name: str, world_sizes=(2, 3), shard_size=4, steps=3, quick=False) -> None:
    spec = MODELS.get(model_name)
    base = ParallelCase(name=model_name, title=spec.title, model=spec.factory, loss=spec.loss_fn,
                        optimizer=_article_optimizer(model_name), world_size=2,
                        input_shape=spec.input_shape, num_classes=spec.num_classes,
                        shard_size=shard_size, steps=steps, family=model_name)
    for world_size in world_sizes:
        CASES.add(replace(base, name=f"{model_name}_w{world_size}", world_size=world_size,
                          quick=quick and world_size == 2))


# The source article's three models, with the optimizers it trains them with.
# The MNIST net costs ~65 MFLOP a sample and every rank also trains the whole-batch reference.
_article_model("mnist_cnn", shard_size=1, steps=2, quick=True)
_article_model("cifar10_lenet")
_article_model("speech_cnn")

_mlp("mlp_sgd_momentum", quick=True)
_mlp("mlp_adam", optimizer=adam, steps=4)
_mlp("mlp_bucket_view", ddp_kwargs={"gradient_as_bucket_view": True})
_mlp("mlp_static_graph", ddp_kwargs={"static_graph": True})
_mlp("mlp_many_buckets", title="MLP 8-32x7-4", model=deep_mlp, ddp_kwargs={"bucket_cap_mb": 1e-4})
_mlp("mlp_unused_layer", title="MLP with an unused layer", model=MlpWithUnusedLayer,
     ddp_kwargs={"find_unused_parameters": True})
_mlp("mlp_unused_layer_static_graph", world_sizes=(2,), title="MLP with an unused layer",
     model=MlpWithUnusedLayer, ddp_kwargs={"static_graph": True})
_mlp("mlp_no_sync_accumulation", accumulate=2, quick=True)
_mlp("mlp_sum_loss", loss=cross_entropy_sum, expected="diverges", expected_reason="sum_loss",
     quick=True)
_mlp("mlp_sum_loss_rescaled", loss=cross_entropy_sum, rescale_loss=True)
_mlp("mlp_batchnorm_broadcast_buffers", title="MLP with BatchNorm1d", model=batchnorm_mlp,
     ddp_kwargs={"broadcast_buffers": True}, expected="diverges", expected_reason="batchnorm",
     quick=True)
_mlp("mlp_dropout", title="MLP with dropout 0.5", model=dropout_mlp, expected="diverges",
     expected_reason="dropout")
_mlp("mlp_uneven_inputs_join", scheme="uneven")
_mlp("mlp_distributed_sampler_padding", scheme="sampler")
# SyncBatchNorm runs on GPUs only; over every rank's shard it must equal whole-batch BatchNorm.
_mlp("mlp_sync_batchnorm", world_sizes=(2,), title="MLP with SyncBatchNorm", model=sync_batchnorm_mlp,
     gpus_needed=2)
