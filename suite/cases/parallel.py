"""Declared data-parallel cases: DDP configurations that must (or must not) equal one process.

Each case names a module-level model factory, loss and optimizer, the DDP options, how data
reaches the ranks (scheme, accumulate) and what the checker must find (`expect`): equivalence,
or a divergence whose cause it must diagnose itself (sum_loss, batchnorm, dropout, ...), so
that the checker's power to see a divergence is tested as well as its silence when there is none.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.models import CASES as MODELS, article_models
from suite.cases.expect import FAILS, Expect, approximate, describe, fails, not_compiled, validate
from suite.cases.registry import Registry

FEATURES, CLASSES = 8, 4  # the small MLPs' input width and number of classes
PARALLEL_CHECKS = ("equivalence",)
# The causes of a divergence the checker diagnoses (suite.conformance.parallel.equivalence explains each).
DIVERGENCE_CAUSES = {
    "sum_loss": "the loss sums over its batch while the ranks' gradients are averaged",
    "batchnorm": "BatchNorm normalises each rank's shard with that shard's statistics",
    "dropout": "each rank draws its own dropout masks",
    "compression": "the communication hook compresses the gradients before averaging",
    "mixed_precision": "a mixed-precision policy computes or reduces in 16 bits",
    "sharding": "a parameter is sharded alone but used outside its module, where it is a sharded DTensor",
    "compiler": "the compiled module computes otherwise than eager",
}


def _diverges(cause: str) -> tuple[Expect, ...]:
    return (fails("equivalence", why=DIVERGENCE_CAUSES[cause], cause=cause),)


_APPROXIMATE = (approximate("equivalence", why="PowerSGD approximates every gradient: its error is the finding"),)


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def deep_mlp() -> nn.Module:
    """Eight layers: with a tiny bucket_cap_mb every parameter gets a bucket of its own."""
    layers = [nn.Linear(FEATURES, 32), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Linear(32, 32), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(32, CLASSES))


class Mlp(nn.Module):
    """An MLP as users write one, a module class of its own. Under torch.compile(DDP(model))
    dynamo skips DDP's forward wrapper and starts a graph in the model's forward, which it does
    for user code only: an nn.Sequential's forward is torch's own, and would run eagerly."""

    def __init__(self, *widths: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def small_mlp() -> nn.Module:
    return Mlp(FEATURES, 16, CLASSES)


def wide_mlp() -> nn.Module:
    """About 2 MB of parameters: more than one of DDP's 1 MB buckets (the smallest size dynamo's
    DDPOptimizer accepts, as its first bucket is 1 MB), so a compiled DDP graph is split."""
    return Mlp(FEATURES, 512, 512, 512, CLASSES)


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


def uneven_mlp() -> nn.Module:
    """Widths 15 and 5 split unevenly over 2, 3 and 4 ranks: FSDP pads the last shards."""
    return nn.Sequential(nn.Linear(FEATURES, 15), nn.ReLU(), nn.Linear(15, 5), nn.ReLU(), nn.Linear(5, CLASSES))


class TiedMlp(nn.Module):
    """Two layers share one weight: FSDP must keep both users in one group (their parent)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(FEATURES, 16)
        self.first = nn.Linear(16, 16)
        self.second = nn.Linear(16, 16)
        self.second.weight = self.first.weight
        self.out = nn.Linear(16, CLASSES)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(torch.relu(self.second(torch.relu(self.first(h)))))


class HandTiedMlp(nn.Module):
    """The parent's forward uses a child's weight, transposed: a head tied by hand, as language
    models tie theirs to the embedding. `proj` holds the weight; the root uses it too."""

    def __init__(self):
        super().__init__()
        self.down = nn.Linear(FEATURES, CLASSES)
        self.proj = nn.Linear(CLASSES, 16)

    def forward(self, x):
        h = torch.relu(self.proj(torch.relu(self.down(x))))
        return F.linear(h, self.proj.weight.t())


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
    wrapper: str = "ddp"  # "ddp", or "fsdp" for FSDP2's fully_shard
    fsdp_kwargs: dict | None = None  # set for wrapper "fsdp"
    shard_modules: tuple[str, ...] | None = None  # FSDP2: the submodules to shard; None: the checker's plan
    comm_hook: str = ""  # a DDP communication hook by name (suite.conformance.parallel.ddp_training)
    compile_backend: str | None = None  # each rank's DDP or FSDP2 module under torch.compile with this backend
    reference_dtype: torch.dtype | None = None  # the reference's forward precision (default the model's)
    rtol: float | None = None  # a declared tolerance, with its derivation beside the case
    atol: float | None = None
    scheme: str = "shards"  # shards, uneven (Join) or sampler; see suite.conformance.parallel.sharding
    accumulate: int = 1  # micro-batches per step, all but the last under no_sync()
    rescale_loss: bool = False  # multiply each rank's loss by the world size
    expect: tuple[Expect, ...] = ()  # a known divergence, or an error reported and not judged
    quick: bool = False  # part of `torchsuite run --quick`
    devices_needed: int = 0
    seed: int = 0
    family: str = ""  # the configuration without its world size; torchrun runs one per family
    model_name: str = ""  # a registered model's name: its batches (token ids for a language model)
    slow: bool = False  # beyond the default test run's budget: `pytest -m slow`
    kind: str = "parallel"

    def __post_init__(self):
        validate(self.name, self.expect, PARALLEL_CHECKS)
        if any(e.outcome == FAILS and e.cause not in DIVERGENCE_CAUSES for e in self.expect):
            raise ValueError(f"{self.name}: an expected divergence names its cause, one of {sorted(DIVERGENCE_CAUSES)}")
        if (self.wrapper == "fsdp") != (self.fsdp_kwargs is not None):
            raise ValueError(f"{self.name}: FSDP cases, and only they, have fsdp_kwargs")

    def runs_at(self, world_size: int) -> bool:
        """Whether the case's configuration is valid at `world_size` ranks (an int
        reshard_after_forward must divide it)."""
        reshard = (self.fsdp_kwargs or {}).get("reshard_after_forward")
        return not (isinstance(reshard, int) and not isinstance(reshard, bool) and world_size % reshard)

    def data(self, world_size: int | None = None) -> tuple[list, list]:
        """One global batch per step (shard_size per rank); for the sampler scheme, a data set
        one sample short of equal shares, so that DistributedSampler has to pad."""
        world_size = world_size or self.world_size
        size = self.shard_size * world_size
        generator = torch.Generator().manual_seed(self.seed)
        count = 1 if self.scheme == "sampler" else self.steps
        if self.scheme == "sampler":
            size -= 1
        if self.model_name:
            batches = [MODELS.get(self.model_name).example_batch(size, seed=self.seed + i) for i in range(count)]
            return [x for x, _ in batches], [y for _, y in batches]
        inputs = [torch.randn((size, *self.input_shape), generator=generator) for _ in range(count)]
        targets = [torch.randint(0, self.num_classes, (size,), generator=generator) for _ in range(count)]
        return inputs, targets

    def describe(self) -> str:
        options = [f"{k}={v}" for k, v in {**self.ddp_kwargs, **(self.fsdp_kwargs or {})}.items()]
        if self.shard_modules is not None:
            options.append(f"fully_shard on {', '.join(self.shard_modules)} and the root")
        if self.comm_hook:
            options.append(f"{self.comm_hook} hook")
        if self.compile_backend:
            options.append(f"torch.compile({self.compile_backend}) inside {self.wrapper.upper()}")
        if self.rtol is not None:
            options.append(f"judged at rtol {self.rtol:g}, atol {self.atol:g}")
        if self.reference_dtype is not None:
            options.append(f"reference in {str(self.reference_dtype).removeprefix('torch.')}")
        if self.scheme != "shards":
            options.append({"uneven": "uneven inputs under Join",
                            "sampler": "DistributedSampler with padding"}[self.scheme])
        if self.accumulate > 1:
            options.append(f"{self.accumulate} micro-batches, no_sync")
        if self.rescale_loss:
            options.append("loss x world size")
        verdict = describe(self.expect)
        optimizer = getattr(self.optimizer, "__name__", None) or str(self.optimizer)
        return (f"{self.wrapper.upper()}: {self.title}, {self.loss.__name__}, {optimizer}, {self.world_size} ranks x "
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
_mlp("mlp_sum_loss", loss=cross_entropy_sum, expect=_diverges("sum_loss"),
     quick=True)
_mlp("mlp_sum_loss_rescaled", loss=cross_entropy_sum, rescale_loss=True)
_mlp("mlp_batchnorm_broadcast_buffers", title="MLP with BatchNorm1d", model=batchnorm_mlp,
     ddp_kwargs={"broadcast_buffers": True}, expect=_diverges("batchnorm"),
     quick=True)
_mlp("mlp_dropout", title="MLP with dropout 0.5", model=dropout_mlp, expect=_diverges("dropout"))
# torch.compile of the DDP module: dynamo's DDPOptimizer splits the graph at bucket boundaries
# so that each bucket's all-reduce still overlaps backward; training must still equal one process.
_mlp("mlp_compiled_ddp", world_sizes=(2,), model=small_mlp, compile_backend="aot_eager", quick=True)
_mlp("mlp_compiled_ddp_buckets", world_sizes=(2,), title="MLP 8-512x3-4", model=wide_mlp,
     ddp_kwargs={"bucket_cap_mb": 1}, compile_backend="aot_eager")
# The same MLP as an nn.Sequential: torch.compile(DDP(model)) compiles nothing (dynamo skips DDP's
# forward and starts graphs in user code only), so the ranks train eagerly: not_compiled.
_mlp("sequential_compiled_ddp", world_sizes=(2,), title="MLP 8-16-4 as an nn.Sequential", compile_backend="aot_eager",
     expect=(not_compiled("equivalence", why="dynamo skips DDP's forward and an nn.Sequential's, torch's own "
                                             "code: it starts no graph, and the ranks train eagerly"),))
# A backend that is wrong on purpose (suite.conformance.compile.backends: every output x 1.001),
# found by name in the workers: inside DDP, the check must see it and blame the compiler.
_mlp("mlp_wrong_backend_ddp", world_sizes=(2,), model=small_mlp, compile_backend="torchsuite_off_by_a_thousandth",
     expect=_diverges("compiler"))
_mlp("mlp_uneven_inputs_join", scheme="uneven")
_mlp("mlp_distributed_sampler_padding", scheme="sampler")

# DDP communication hooks. fp16/bf16 compression rounds each rank's gradient to 16 bits (unit
# roundoff u = 2^-11 for fp16, 2^-8 for bf16), divides by N and sums N of them in 16 bits: the
# averaged gradient errs by at most about (N + 1) u times the gradients' size, which is of order
# one here (cross-entropy on a small MLP). Declared tolerance: rtol = atol = 4u, which covers
# N = 2 with room; at float32's tolerance the same run must diverge, with compression named.
FP16_U, BF16_U = 2.0 ** -11, 2.0 ** -8
_mlp("mlp_allreduce_hook", world_sizes=(2,), comm_hook="allreduce", steps=4)
_mlp("mlp_fp16_compress_hook", world_sizes=(2,), comm_hook="fp16_compress", steps=4,
     rtol=4 * FP16_U, atol=4 * FP16_U)
_mlp("mlp_fp16_compress_hook_float32_tolerance", world_sizes=(2,), comm_hook="fp16_compress", steps=4,
     expect=_diverges("compression"))
_mlp("mlp_bf16_compress_hook", world_sizes=(2,), comm_hook="bf16_compress", steps=4,
     rtol=4 * BF16_U, atol=4 * BF16_U)
_mlp("mlp_bf16_compress_hook_float32_tolerance", world_sizes=(2,), comm_hook="bf16_compress", steps=4,
     expect=_diverges("compression"))
# PowerSGD replaces each gradient by a rank-1 approximation: no tolerance makes it equal, so
# its error is reported, not judged.
_mlp("mlp_powersgd_hook", world_sizes=(2,), comm_hook="powersgd", steps=4, expect=_APPROXIMATE)


def _fsdp(name: str, world_sizes=(2, 3, 4), quick=False, fsdp_kwargs=None, **fields) -> None:
    _mlp(f"fsdp_{name}", world_sizes=world_sizes, quick=quick, wrapper="fsdp",
         fsdp_kwargs=dict(fsdp_kwargs or {}), **fields)


def _bf16_params():
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16)}


def _bf16_reduce():
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return {"mp_policy": MixedPrecisionPolicy(reduce_dtype=torch.bfloat16)}


# FSDP2 (fully_shard): the same promise as DDP's, with the parameters sharded.
_fsdp("mlp", quick=True)
_fsdp("mlp_no_reshard", world_sizes=(2, 3), fsdp_kwargs={"reshard_after_forward": False})
_fsdp("mlp_reshard_to_2", world_sizes=(2, 4), fsdp_kwargs={"reshard_after_forward": 2})
_fsdp("mlp_uneven_shapes", title="MLP 8-15-5-4", model=uneven_mlp)
_fsdp("mlp_tied_weights", world_sizes=(2, 3), title="MLP with a tied weight", model=TiedMlp, quick=True)
# A head tied by hand (the root's forward uses proj.weight): the checker finds the use by running
# the model once and shards proj's weight with the root; sharding proj alone cannot work, and
# the verdict says which parameter and what to do instead of a worker's mixed-DTensor error.
_fsdp("mlp_hand_tied_head", world_sizes=(2, 3), title="MLP with a head tied by hand", model=HandTiedMlp)
_fsdp("mlp_hand_tied_head_proj_sharded_alone", world_sizes=(2,), title="MLP with a head tied by hand",
      model=HandTiedMlp, shard_modules=("down", "proj"), expect=_diverges("sharding"))
# Each rank's FSDP2 module under torch.compile. With the root alone sharded (shard_modules=()),
# dynamo traces the model's forward whole, and a wrong backend must show. With each layer sharded
# too (the checker's own plan), dynamo skips the hooks fully_shard puts on each layer; that
# graph break falls inside the model's loop over its layers, so dynamo runs the whole forward
# eagerly and compiles nothing (skip_fsdp_hooks=False fails too, tracing a generator): not_compiled.
_fsdp("mlp_compiled_root_only", world_sizes=(2,), model=small_mlp, compile_backend="aot_eager", shard_modules=())
_fsdp("mlp_wrong_backend_root_only", world_sizes=(2,), model=small_mlp, shard_modules=(),
      compile_backend="torchsuite_off_by_a_thousandth", expect=_diverges("compiler"))
_fsdp("mlp_compiled_per_layer", world_sizes=(2,), model=small_mlp, compile_backend="aot_eager",
      expect=(not_compiled("equivalence", why="dynamo skips the hooks fully_shard puts on each layer, and the graph "
                                              "break inside the model's loop over its layers runs the forward eagerly"),))
_fsdp("mlp_accumulation", world_sizes=(2,), accumulate=2)
_fsdp("mlp_adam", world_sizes=(2,), optimizer=adam, steps=4)
_fsdp("mlp_sum_loss", world_sizes=(2,), loss=cross_entropy_sum, expect=_diverges("sum_loss"))
_fsdp("mlp_batchnorm", world_sizes=(2,), title="MLP with BatchNorm1d", model=batchnorm_mlp,
      expect=_diverges("batchnorm"))
# bf16 parameters for forward and backward: against a float32 reference they diverge (by about
# 5e-4 here); against a reference run in bf16 they agree within bf16's rounding, 4u as above.
_fsdp("mlp_bf16_params", world_sizes=(2,), fsdp_kwargs=_bf16_params(), expect=_diverges("mixed_precision"))
_fsdp("mlp_bf16_params_bf16_reference", world_sizes=(2,), fsdp_kwargs=_bf16_params(),
      reference_dtype=torch.bfloat16, rtol=4 * BF16_U, atol=4 * BF16_U)
# float32 parameters, gradients reduced in bf16: the reduction's rounding alone diverges, and the
# cause is named from reduce_dtype.
_fsdp("mlp_bf16_reduce", world_sizes=(2,), fsdp_kwargs=_bf16_reduce(), expect=_diverges("mixed_precision"))
for _model in article_models():
    _spec = MODELS.get(_model)
    CASES.add(ParallelCase(name=f"fsdp_{_model}_w2", title=_spec.title, model=_spec.factory, loss=_spec.loss_fn,
                           optimizer=_article_optimizer(_model), world_size=2, input_shape=_spec.input_shape,
                           num_classes=_spec.num_classes, shard_size=1 if _model == "mnist_cnn" else 4,
                           steps=2 if _model == "mnist_cnn" else 3, wrapper="fsdp", fsdp_kwargs={},
                           family=f"fsdp_{_model}"))

# The standard workloads: the GPT-2-shaped LM's mini config (token ids, a tied head, AdamW) under
# DDP and FSDP2, and torchvision's resnet18, whose BatchNorm normalizes each rank's shard by its
# own statistics: a divergence the checker must name.
_LM = MODELS.get("gpt2_lm_mini")
for _wrapper in ("ddp", "fsdp"):
    CASES.add(ParallelCase(name=f"{_wrapper}_gpt2_lm_mini_w2", title=_LM.title, model=_LM.factory, loss=_LM.loss_fn,
                           optimizer=_LM.make_optimizer, world_size=2, input_shape=_LM.input_shape,
                           num_classes=_LM.num_classes, shard_size=2, steps=2, wrapper=_wrapper,
                           fsdp_kwargs={} if _wrapper == "fsdp" else None, model_name="gpt2_lm_mini",
                           family=f"{_wrapper}_gpt2_lm_mini", slow=_wrapper == "fsdp"))


CIFAR_CLASSES = 10


def resnet18_cifar() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(num_classes=CIFAR_CLASSES)


for _wrapper in ("ddp", "fsdp"):
    CASES.add(ParallelCase(name=f"{_wrapper}_resnet18_w2", title="ResNet-18 (torchvision) on 32x32 images",
                           model=resnet18_cifar, loss=F.cross_entropy, optimizer=sgd_momentum, world_size=2,
                           input_shape=(3, 32, 32), num_classes=CIFAR_CLASSES, shard_size=2, steps=2,
                           wrapper=_wrapper, fsdp_kwargs={} if _wrapper == "fsdp" else None,
                           expect=_diverges("batchnorm"), family=f"{_wrapper}_resnet18", slow=True))

# SyncBatchNorm runs on GPUs only; over every rank's shard it must equal whole-batch BatchNorm.
_mlp("mlp_sync_batchnorm", world_sizes=(2,), title="MLP with SyncBatchNorm", model=sync_batchnorm_mlp,
     devices_needed=2)
