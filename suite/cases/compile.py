"""Declared torch.compile cases: a model, a backend, train or eval, and the verdict check_compile must reach.

By default the compiled model trains (or infers) like eager, by the rule of
suite.conformance.compile.rule. A case that must differ expects its `equivalence` check to
fail, and says why, so that the checker's power to see a difference is tested beside its
silence where there is none: inductor draws dropout's random numbers with its own generator,
so its masks are not eager's; with inductor's fallback_random on it calls eager's random ops
and agrees again. A case dynamo runs eagerly (a GRU or an LSTM under its defaults) expects
`not_compiled`: nothing was compared, and the check must say so rather than "equivalent".
Each case also declares how many graph breaks the forward has (dynamo's explain counts them).
Every case's steps see two batch sizes (check_compile's default), so the backend also
compiles the graph with a symbolic batch size.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.expect import Expect, approximate, describe, fails, not_compiled, validate
from suite.cases.models import CASES as MODELS, article_models, standard_models
from suite.cases.parallel import CLASSES, FEATURES, adam, batchnorm_mlp, dropout_mlp, sgd_momentum, small_mlp
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


class RecurrentClassifier(nn.Module):
    """A GRU or an LSTM over a sequence, classified from its last output."""

    def __init__(self, cell: type[nn.RNNBase]):
        super().__init__()
        self.rnn = cell(FEATURES, 16, batch_first=True)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def gru_classifier() -> nn.Module:
    return RecurrentClassifier(nn.GRU)


def lstm_classifier() -> nn.Module:
    return RecurrentClassifier(nn.LSTM)


@contextlib.contextmanager
def without_onednn():
    """oneDNN (mkldnn) off, so that the CPU's LSTM takes ATen's own kernels instead of
    mkldnn_rnn_layer (eager and compiled alike)."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


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
    steps: int = 3  # check_compile's: two at the batch size, the third at half of it
    expect: tuple[Expect, ...] = ()  # a known difference from eager, with its reason
    graph_breaks: int = 0
    inductor_config: dict = field(default_factory=dict)
    dynamo_config: dict = field(default_factory=dict)  # torch._dynamo.config settings ({"allow_rnn": True})
    onednn: bool = True  # False: the steps run with oneDNN off (without_onednn)
    compile_parts: str = "model"  # "model", "optimizer" (torch.compile of optimizer.step) or "both"
    compile_mode: str | None = None  # torch.compile's mode ("reduce-overhead": CUDA graphs)
    devices: tuple[str, ...] = ()  # the device types its declaration holds for; () means every one
    model_name: str = ""  # a registered model's name: its batches, and the report's compiled speedups
    quick: bool = False  # part of `torchsuite run --quick`
    slow: bool = False  # a compile beyond the default test run's budget (inductor's, a recurrent layer's): `pytest -m slow`
    in_run: bool = True  # part of a full `torchsuite run` (False: `pytest -m slow` only; minutes of compiling)
    seed: int = 0
    kind: str = "compile"

    def __post_init__(self):
        validate(self.name, self.expect, COMPILE_CHECKS)

    def data(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One seeded batch per step, the same on every machine (a registered model's own kind of batch)."""
        if self.model_name:
            batches = [MODELS.get(self.model_name).example_batch(self.batch_size, seed=self.seed + step)
                       for step in range(self.steps)]
            return [x for x, _ in batches], [y for _, y in batches]
        g = torch.Generator().manual_seed(self.seed)
        inputs = [torch.randn((self.batch_size, *self.input_shape), generator=g) for _ in range(self.steps)]
        targets = [torch.randint(0, self.num_classes, (self.batch_size,), generator=g) for _ in range(self.steps)]
        return inputs, targets

    def describe(self) -> str:
        settings = "".join(f", {k}={v}" for k, v in {**self.dynamo_config, **self.inductor_config}.items())
        settings += "" if self.compile_parts == "model" else f", compiles the {self.compile_parts}"
        settings += f", mode={self.compile_mode}" if self.compile_mode else ""
        settings += ("" if self.onednn else ", oneDNN off") + (f", {'/'.join(self.devices)} only" if self.devices else "")
        verdict = describe(self.expect)
        return (f"{self.title}, {self.backend}{settings}, {self.mode}, {self.steps} steps of batch {self.batch_size} "
                f"then {self.batch_size // 2}, "
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
                mode=_mode, model_name=_name, quick=_backend == "aot_eager",
                # the default tests keep one of the six aot_eager cases: the others compile the same way
                slow=_backend == "inductor" or (_name, _mode) != ("mnist_cnn", "train")))


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
                              quick=_backend == "aot_eager", slow=_backend == "inductor" or _mode == "eval", **_SMALL))
# A data-dependent branch: two graphs, one break, and still eager's numbers.
for _backend in BACKENDS:
    CASES.add(CompileCase(name=f"data_dependent_branch_{_backend}_train", title="MLP with a data-dependent branch",
                          model=DataDependentBranch, backend=_backend, graph_breaks=1,
                          quick=_backend == "aot_eager", slow=_backend == "inductor", **_SMALL))

# Recurrent layers: dynamo's defaults (allow_rnn=False) run them eagerly, so the backend gets no
# graph and the check can only say not_compiled. allow_rnn=True compiles them, and then torch
# itself fails on the CPU for the LSTM in training (docs/found.md): under oneDNN, its default,
# AOTAutograd asserts on the Parameters the LSTM saves for backward (aot_eager) and inductor
# calls mkldnn_rnn_layer with a None (TypeError). Eval works, and training does with oneDNN off.
_RNN = dict(loss=F.cross_entropy, optimizer=sgd_momentum, input_shape=(5, FEATURES), num_classes=CLASSES)
_ALLOW_RNN = {"allow_rnn": True}
# inductor's compile caches leave torch.backends.mkldnn.enabled out of their key (docs/found.md):
# an LSTM compiled with oneDNN off answers later for one with it on, and the other way round,
# so the two LSTM cases that differ only in it compile afresh.
_NO_CACHES = {"force_disable_caches": True}
_ONEDNN = dict(devices=("cpu",))  # oneDNN is the CPU's; what the LSTM does on a GPU (cuDNN) is not checked
_RUNS_EAGERLY = "dynamo's default allow_rnn=False runs GRU, LSTM and RNN eagerly ('Attempted to wrap RNN, GRU, or LSTM')"
_LSTM_UNDER_ONEDNN = ("torch 2.11 fails to compile an LSTM for training on the CPU under oneDNN: "
                      "aot_eager asserts on saved Parameters, inductor calls mkldnn_rnn_layer with None")
for _rnn, _model in (("gru", gru_classifier), ("lstm", lstm_classifier)):
    CASES.add(CompileCase(name=f"{_rnn}_aot_eager_train", title=f"{_rnn.upper()} classifier", model=_model,
                          backend="aot_eager", quick=True, **_RNN,
                          expect=(not_compiled("equivalence", why=_RUNS_EAGERLY),)))
# None quick, and the ones that train a compiled recurrent layer slow even under aot_eager
# (3 s each here): the default test run keeps the LSTM that raises (at once) and its eval.
for _backend in BACKENDS:
    CASES.add(CompileCase(name=f"gru_allow_rnn_{_backend}_train", title="GRU classifier", model=gru_classifier,
                          backend=_backend, dynamo_config=_ALLOW_RNN, slow=True, **_RNN))
    CASES.add(CompileCase(name=f"lstm_allow_rnn_{_backend}_train", title="LSTM classifier", model=lstm_classifier,
                          backend=_backend, dynamo_config=_ALLOW_RNN, slow=_backend == "inductor", **_RNN, **_ONEDNN,
                          inductor_config=_NO_CACHES if _backend == "inductor" else {},
                          expect=(fails("equivalence", why=_LSTM_UNDER_ONEDNN, cause="raises"),)))
    CASES.add(CompileCase(name=f"lstm_allow_rnn_no_onednn_{_backend}_train", title="LSTM classifier",
                          model=lstm_classifier, backend=_backend, dynamo_config=_ALLOW_RNN, onednn=False,
                          inductor_config=_NO_CACHES if _backend == "inductor" else {}, slow=True, **_RNN, **_ONEDNN))
CASES.add(CompileCase(name="lstm_allow_rnn_aot_eager_eval", title="LSTM classifier", model=lstm_classifier,
                      backend="aot_eager", mode="eval", dynamo_config=_ALLOW_RNN, **_RNN, **_ONEDNN))

# The optimizer step under torch.compile (the module eager, then both): Adam's and SGD's updates,
# parameters after every step against eager's and the float64 run's.
for _parts, _optimizer, _label, _backend in (("optimizer", sgd_momentum, "sgd_momentum", "aot_eager"),
                                             ("optimizer", adam, "adam", "aot_eager"),
                                             ("optimizer", adam, "adam", "inductor"),
                                             ("both", adam, "adam", "aot_eager")):
    CASES.add(CompileCase(name=f"mlp_{_label}_compiled_{_parts}_{_backend}_train", title="MLP 8-16-4",
                          model=small_mlp, loss=F.cross_entropy, optimizer=_optimizer, input_shape=(FEATURES,),
                          num_classes=CLASSES, backend=_backend, compile_parts=_parts,
                          quick=_label == "sgd_momentum", slow=_label == "adam"))
# CUDA graphs (mode="reduce-overhead"): GPUs only; on a machine without one the case is skipped.
CASES.add(CompileCase(name="mlp_reduce_overhead_inductor_train", title="MLP 8-16-4", model=small_mlp,
                      backend="inductor", compile_mode="reduce-overhead", devices=("cuda",), **_SMALL))
# torch.export: the exported program's module trains like eager (outputs, gradients, parameters,
# BatchNorm's buffers), its batch size dynamic; a Python branch on a tensor's value is what
# export refuses (it has no graph breaks to fall back on): the check fails, saying so.
for _name, _title, _model, _mode in (("mlp", "MLP 8-16-4", small_mlp, "train"),
                                     ("batchnorm_mlp", "MLP with BatchNorm1d", batchnorm_mlp, "train"),
                                     ("batchnorm_mlp", "MLP with BatchNorm1d", batchnorm_mlp, "eval")):
    CASES.add(CompileCase(name=f"{_name}_export_{_mode}", title=_title, model=_model, backend="export", mode=_mode,
                          quick=_name == "mlp", slow=_name != "mlp", **_SMALL))
CASES.add(CompileCase(name="data_dependent_branch_export_train", title="MLP with a data-dependent branch",
                      model=DataDependentBranch, backend="export", graph_breaks=1, **_SMALL,
                      expect=(fails("equivalence", why="torch.export cannot trace a Python branch on a tensor's "
                                                       "value: it has no graph break to fall back on", cause="raises"),)))

# The standard workloads' mini configs, trained, batch 4 (their steps are big). Under aot_eager they
# take 5 to 16 s each here, so the default tests keep the GPT-2-shaped LM's and the rest are slow;
# under inductor 40 to 100 s each (cold compiles), so those are `pytest -m slow` only, not in runs.
_WORKLOAD_DECLARATIONS = {
    # LayerDrop's `torch.rand(1).item()` in every encoder layer's loop, even at layer_drop=0.
    "wav2vec2_base_mini": dict(graph_breaks=4),
    "lstm_lm_mini": dict(expect=(not_compiled("equivalence", why=_RUNS_EAGERLY),)),
    "resnet50_mini_inductor": dict(expect=(approximate(
        "equivalence", why="inductor's fused BatchNorm backward: one bias gradient (layer4.2.bn2.bias) at 3.5x "
                           "eager float32's RMS error on 2 cores, past the 3x bound; reported, not judged"),)),
}
for _name in standard_models("mini"):
    _spec = MODELS.get(_name)
    for _backend in BACKENDS:
        CASES.add(CompileCase(
            name=f"{_name}_{_backend}_train", title=_spec.title, model=_spec.factory, loss=_spec.loss_fn,
            optimizer=_spec.make_optimizer, input_shape=_spec.input_shape, num_classes=_spec.num_classes,
            backend=_backend, batch_size=4, model_name=_name, in_run=_backend != "inductor",
            slow=not (_name == "gpt2_lm_mini" and _backend == "aot_eager"),
            **_WORKLOAD_DECLARATIONS.get(_name, {}), **_WORKLOAD_DECLARATIONS.get(f"{_name}_{_backend}", {})))
