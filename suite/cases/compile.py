"""Declared torch.compile cases: a model, a backend, train or eval, and the verdict check_compile must reach.

By default the compiled model trains (or infers) like eager, by the rule of
suite.conformance.compile.rule. A case that must differ expects its `equivalence` check to
fail, and says why, so that the checker's power to see a difference is tested beside its
silence where there is none: inductor draws dropout's random numbers with its own generator,
so its masks are not eager's; with inductor's fallback_random on it calls eager's random ops
and agrees again.
Each case also declares how many graph breaks the forward has (dynamo's explain counts them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.expect import Expect, describe, fails, validate
from suite.cases.models import CASES as MODELS, article_models
from suite.cases.parallel import CLASSES, FEATURES, batchnorm_mlp, dropout_mlp, sgd_momentum
from suite.cases.registry import Registry
from suite.cases.variants import MODES

BACKENDS = ("aot_eager", "inductor")
COMPILE_CHECKS = ("equivalence",)


class DataDependentBranch(nn.Module):
    """Which head runs depends on the activations' values: dynamo must break the graph there."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(FEATURES, 16)
        self.positive = nn.Linear(16, CLASSES)
        self.negative = nn.Linear(16, CLASSES)

    def forward(self, x):
        h = torch.relu(self.hidden(x))
        if h.mean() > 0.1:  # a Python branch on a tensor's value
            return self.positive(h)
        return self.negative(h)


@dataclass(frozen=True)
class CompileCase:
    name: str
    title: str
    model: Callable[[], nn.Module]
    loss: Callable
    optimizer: Callable  # params -> optimizer
    input_shape: tuple[int, ...]
    num_classes: int
    backend: str
    mode: str = "train"  # or "eval": forward only, under no_grad
    batch_size: int = 8
    steps: int = 2
    expect: tuple[Expect, ...] = ()  # a known difference from eager, with its reason
    graph_breaks: int = 0
    inductor_config: dict = field(default_factory=dict)
    article_model: str = ""  # the model registry's name, for the report's compiled speedups
    quick: bool = False  # part of `torchsuite run --quick`
    slow: bool = False  # an inductor compile beyond the default test run's budget: `pytest -m slow`
    seed: int = 0
    kind: str = "compile"

    def __post_init__(self):
        validate(self.name, self.expect, COMPILE_CHECKS)

    def data(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One seeded batch per step, the same on every machine."""
        g = torch.Generator().manual_seed(self.seed)
        inputs = [torch.randn((self.batch_size, *self.input_shape), generator=g) for _ in range(self.steps)]
        targets = [torch.randint(0, self.num_classes, (self.batch_size,), generator=g) for _ in range(self.steps)]
        return inputs, targets

    def describe(self) -> str:
        settings = "".join(f", {k}={v}" for k, v in self.inductor_config.items())
        verdict = describe(self.expect)
        return (f"{self.title}, {self.backend}{settings}, {self.mode}, {self.steps} steps of {self.batch_size}, "
                f"{self.graph_breaks} graph break(s): {verdict}")


CASES: Registry[CompileCase] = Registry("compile")

_SMALL = dict(loss=F.cross_entropy, optimizer=sgd_momentum, input_shape=(FEATURES,), num_classes=CLASSES)

for _name in article_models():
    _spec = MODELS.get(_name)
    for _backend in BACKENDS:
        for _mode in MODES:
            CASES.add(CompileCase(
                name=f"{_name}_{_backend}_{_mode}", title=_spec.title,
                model=_spec.factory, loss=_spec.loss_fn, optimizer=_spec.make_optimizer,
                input_shape=_spec.input_shape, num_classes=_spec.num_classes, backend=_backend,
                mode=_mode, article_model=_name, quick=_backend == "aot_eager", slow=_backend == "inductor"))

# Dropout: aot_eager runs eager's random ops in eager's order, inductor its own unless told not to.
CASES.add(CompileCase(name="dropout_mlp_aot_eager_train", title="MLP with dropout 0.5", model=dropout_mlp,
                      backend="aot_eager", quick=True, **_SMALL))
CASES.add(CompileCase(name="dropout_mlp_inductor_train", title="MLP with dropout 0.5", model=dropout_mlp,
                      backend="inductor", **_SMALL,
                      expect=(fails("equivalence", why="inductor draws its own random numbers: dropout masks differ from eager's"),)))
CASES.add(CompileCase(name="dropout_mlp_inductor_fallback_random_train", title="MLP with dropout 0.5",
                      model=dropout_mlp, backend="inductor", inductor_config={"fallback_random": True},
                      **_SMALL))
# BatchNorm: running statistics and the batch counter are buffers the compiled copy must update alike.
for _backend in BACKENDS:
    for _mode in MODES:
        CASES.add(CompileCase(name=f"batchnorm_mlp_{_backend}_{_mode}",
                              title="MLP with BatchNorm1d", model=batchnorm_mlp, backend=_backend, mode=_mode,
                              quick=_backend == "aot_eager", slow=_backend == "inductor", **_SMALL))
# A data-dependent branch: two graphs, one break, and still eager's numbers.
for _backend in BACKENDS:
    CASES.add(CompileCase(name=f"data_dependent_branch_{_backend}_train", title="MLP with a data-dependent branch",
                          model=DataDependentBranch, backend=_backend, graph_breaks=1,
                          quick=_backend == "aot_eager", slow=_backend == "inductor", **_SMALL))
