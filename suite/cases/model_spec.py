"""The one spec type of a timed and checked model: the article's three and the standard workloads.

Each `ModelSpec` says everything a consumer needs: how to build the network, what one input
sample and its label look like, the loss and optimizer to train it with, and the batch size per
device kind. `family` says where it comes from ("article": the source document; "standard": the
workloads people compare hardware on, suite.cases.workloads); `size` says whether it is the
workload as people run it ("full") or its small config ("mini": same code, reduced input or
depth, for CPUs, quick runs and tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from suite.cases.expect import Expect

FAMILIES = ("article", "standard")
SIZES = ("full", "mini")


@dataclass(frozen=True)
class RealTarget:
    """A quality target on the model's real dataset, evaluated on its test split every epoch."""

    accuracy: float  # test-split top-1 accuracy to reach
    max_epochs: int  # the cap: a run that has not reached `accuracy` by then did not converge
    source: str  # where the figure comes from, and whether it was measured by this project
    measured_here: bool = False


@dataclass(frozen=True)
class SyntheticTask:
    """A stand-in task hard enough that reaching `accuracy` takes hundreds of steps.

    Sample of class y: signal * (P[y] + overlap * P[z]) + N(0, 1) noise, where P holds one fixed
    N(0, 1) pattern per class (drawn from `data_seed` only) and z is a random *other* class: each
    sample looks partly like a second class, so the classes overlap. Every batch is drawn on the
    CPU from a generator seeded by the run's seed, so a seed gives the same batches on every
    machine; the held-out split comes from its own stream of `data_seed`.
    """

    signal: float
    overlap: float
    accuracy: float  # held-out top-1 accuracy to reach
    eval_every: int  # steps between evaluations (the clock keeps running through them)
    eval_samples: int  # size of the held-out split
    max_steps: int  # the cap: not reached by then = not converged
    expected_s: float  # one run's time on the 2-core machine the suite was written on (for --dry-run)
    data_seed: int = 0


@dataclass(frozen=True)
class ConvergenceTargets:
    """What `torchsuite converge` trains a model to: the article's loop, batch size and optimizer."""

    real: RealTarget
    synthetic: SyntheticTask
    batch_size: int = 100  # the article's, for all three models, on every device: steps compare across devices
    # Targets on real data that a package ships (suite.data.SUBSETS), by data name (`--data NAME`):
    # unlike the whole datasets', these can be measured on machines without the dataset.
    subsets: dict[str, RealTarget] = field(default_factory=dict)


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
    convergence: ConvergenceTargets | None = None
    family: str = "article"
    size: str = "full"
    full_name: str = ""  # a mini config: the name of the workload it is the small config of
    # Labels per sample: () one class, (n,) n of them (a token per position; a CTC target).
    label_shape: tuple[int, ...] = ()
    tokens_per_sample: int = 0  # a language model's tokens per sample: figures also in tokens/s
    serving: bool = False  # people serve it: batch-1 latency percentiles are timed too
    expect: tuple[Expect, ...] = ()  # a model check (suite.conformance.autograd.models) that does not apply, and why
    kind: str = "model"

    def __post_init__(self):
        if self.family not in FAMILIES or self.size not in SIZES:
            raise ValueError(f"model {self.name!r}: family must be one of {FAMILIES}, size one of {SIZES}")

    @property
    def image_input(self) -> bool:
        """Inputs are images (channels x height x width): channels_last applies."""
        return len(self.input_shape) == 3 and self.input_dtype.is_floating_point

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
        if self.input_dtype.is_floating_point:
            x = torch.randn((batch_size, *self.input_shape), generator=g, dtype=self.input_dtype)
        else:  # token ids
            x = torch.randint(0, self.num_classes, (batch_size, *self.input_shape), generator=g)
        y = torch.randint(0, self.num_classes, (batch_size, *self.label_shape), generator=g)
        return x.to(device), y.to(device)

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        inputs = f"{shape} token ids of {self.num_classes}" if self.tokens_per_sample else \
            f"input {shape}, {self.num_classes} classes"
        return f"{self.title}; {inputs}, {self.loss_fn.__name__}"
