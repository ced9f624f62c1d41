"""Declared resumed runs: train, save, resume, and equal the same run that never stopped.

Each case trains `saved_at` steps on `world_size` ranks (DDP or FSDP2), saves the model, the
optimizer, the LR scheduler and the random state (with DCP, or with a checkpoint written as
training scripts write one: `TorchSave`), loads them into a fresh group of `resume_world_size`
ranks and trains the remaining steps beside the uninterrupted run
(suite.conformance.parallel.resume). A planted case leaves something out of the checkpoint, as
users do by mistake, and the checker must name what.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.expect import FAILS, Expect, describe, fails, validate
from suite.cases.parallel import (CIFAR_CLASSES, CLASSES, FEATURES, OptimizerSpec, batchnorm_mlp, dropout_mlp,
                                  resnet18_cifar, sgd_momentum, tiny_mlp, uneven_mlp)
from suite.cases.registry import Registry

RESUME_CHECKS = ("resume",)
# What a checkpoint can fail to restore: the checker names one when the state right after loading
# is not the state saved (suite.conformance.parallel.resume explains each and its fix).
RESUME_CAUSES = {
    "optimizer_state_not_restored": "the optimizer's state is not in the checkpoint: momentum and Adam's "
                                    "moments start again from zero after the resume",
    "lr_schedule_not_restored": "the LR scheduler's state is not in the checkpoint: the schedule starts again",
    "parameters_not_restored": "the model's parameters or buffers after loading are not those saved",
    "non_persistent_buffer_not_restored": "a buffer registered with persistent=False carries state, and "
                                          "state_dict() leaves it out",
    "rng_state_not_restored": "the random state is not in the checkpoint: dropout draws other masks after the resume",
}


def _lost(cause: str) -> tuple[Expect, ...]:
    return (fails("resume", why=RESUME_CAUSES[cause], cause=cause),)


@dataclass(frozen=True)
class SchedulerSpec:
    """An LR scheduler class and its settings: a picklable `optimizer -> scheduler`."""

    scheduler: type
    kwargs: dict

    def __call__(self, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return self.scheduler(optimizer, **self.kwargs)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.scheduler.__name__}({args})"


# A warm-up from a quarter of the rate over 4 steps. Its factor depends on its step count, which
# only the scheduler's state holds: the optimizer's saved rate alone does not continue it (as it
# would StepLR's, whose update only multiplies the current rate).
warmup = SchedulerSpec(torch.optim.lr_scheduler.LinearLR, {"start_factor": 0.25, "total_iters": 4})
adam_fast = OptimizerSpec(torch.optim.Adam, {"lr": 1e-2})


class CountingMlp(nn.Module):
    """MLP 8-16-4 that counts its training steps in a buffer registered persistent=False, and
    scales its hidden layer by the count: state that no state dict holds."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(FEATURES, 16), nn.Linear(16, CLASSES)
        self.register_buffer("steps_seen", torch.zeros(()), persistent=False)

    def forward(self, x):
        if self.training:
            self.steps_seen += 1
        return self.out(torch.relu(self.hidden(x)) * (1 + 0.1 * self.steps_seen))


class TableMlp(nn.Module):
    """MLP 8-16-4 with a constant table in a non-persistent buffer (as positional encodings are
    kept): left out of the state dict, and rightly, since every run builds the same one."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(FEATURES, 16), nn.Linear(16, CLASSES)
        self.register_buffer("table", torch.linspace(0.5, 1.5, 16), persistent=False)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)) * self.table)


@dataclass(frozen=True)
class TorchSave:
    """A checkpoint as training scripts write one under DDP: rank 0 torch.saves the model's (and
    the optimizer's and the scheduler's) state dicts, every rank its own random state; every rank
    loads them (torch.load, weights_only). optimizer / scheduler / rng False leave that out, as
    scripts do by mistake. Its save and load are check_resume's save_fn and load_fn."""

    optimizer: bool = True
    scheduler: bool = True
    rng: bool = True

    def save(self, model, optimizer, scheduler, directory: str) -> None:
        import torch.distributed as dist

        rank = dist.get_rank()
        if rank == 0:
            state = {"model": model.state_dict()}
            if self.optimizer:
                state["optimizer"] = optimizer.state_dict()
            if self.scheduler and scheduler is not None:
                state["scheduler"] = scheduler.state_dict()
            torch.save(state, os.path.join(directory, "checkpoint.pt"))
        if self.rng:
            torch.save(torch.get_rng_state(), os.path.join(directory, f"rng-{rank}.pt"))

    def load(self, model, optimizer, scheduler, directory: str) -> None:
        import torch.distributed as dist

        state = torch.load(os.path.join(directory, "checkpoint.pt"), weights_only=True)
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if self.rng:
            torch.set_rng_state(torch.load(os.path.join(directory, f"rng-{dist.get_rank()}.pt"), weights_only=True))

    def __str__(self) -> str:
        lost = [what for what in ("optimizer", "scheduler", "rng") if not getattr(self, what)]
        return "torch.save" + (f" without the {' and '.join(lost)}" if lost else "")


@dataclass(frozen=True)
class ResumeCase:
    name: str
    title: str  # the model, in words
    model: Callable[[], nn.Module]
    optimizer: Callable  # params -> optimizer
    wrapper: str  # "ddp", or "fsdp" for FSDP2's fully_shard
    world_size: int  # ranks that train and save
    resume_world_size: int  # ranks of the fresh group that loads and trains the rest
    scheduler: Callable | None = None  # optimizer -> LR scheduler, stepped every step
    loss: Callable = F.cross_entropy
    input_shape: tuple[int, ...] = (FEATURES,)
    num_classes: int = CLASSES
    batch: int = 8  # the global batch: it splits evenly over both world sizes
    steps: int = 4
    saved_at: int = 2  # steps trained before the checkpoint
    save_optimizer: bool = True  # False plants the commonest mistake: a model-only checkpoint
    save_scheduler: bool = True
    checkpoint: TorchSave | None = None  # the checkpoint code (save_fn, load_fn); None: the suite's DCP
    expect: tuple[Expect, ...] = ()
    quick: bool = False  # part of `torchsuite run --quick`
    seed: int = 0
    kind: str = "resume"

    def __post_init__(self):
        validate(self.name, self.expect, RESUME_CHECKS)
        if any(e.outcome == FAILS and e.cause not in RESUME_CAUSES for e in self.expect):
            raise ValueError(f"{self.name}: an expected failure names its cause, one of {sorted(RESUME_CAUSES)}")
        if self.wrapper not in ("ddp", "fsdp"):
            raise ValueError(f"{self.name}: wrapper is ddp or fsdp, not {self.wrapper!r}")
        if self.batch % self.world_size or self.batch % self.resume_world_size:
            raise ValueError(f"{self.name}: a batch of {self.batch} does not split over both "
                             f"{self.world_size} and {self.resume_world_size} ranks")
        if not 0 < self.saved_at < self.steps:
            raise ValueError(f"{self.name}: saved_at must fall between the first and the last step")

    @property
    def fsdp_kwargs(self) -> dict | None:
        return {} if self.wrapper == "fsdp" else None

    def data(self) -> tuple[list, list]:
        """One global batch per step, the same whatever the world size."""
        generator = torch.Generator().manual_seed(self.seed)
        inputs = [torch.randn((self.batch, *self.input_shape), generator=generator) for _ in range(self.steps)]
        targets = [torch.randint(0, self.num_classes, (self.batch,), generator=generator)
                   for _ in range(self.steps)]
        return inputs, targets

    def describe(self) -> str:
        lost = [what for what, saved in (("optimizer", self.save_optimizer), ("scheduler", self.save_scheduler))
                if not saved]
        schedule = f", {self.scheduler}" if self.scheduler else ""
        saved = str(self.checkpoint) if self.checkpoint else "DCP" + (f" without the {' and '.join(lost)}" if lost else "")
        return (f"{'FSDP2' if self.wrapper == 'fsdp' else 'DDP'}: {self.title}, {self.optimizer}{schedule}, "
                f"{self.saved_at} steps on {self.world_size} ranks, {saved} save, resumed on {self.resume_world_size} "
                f"ranks for {self.steps - self.saved_at}: {describe(self.expect)}")


CASES: Registry[ResumeCase] = Registry("resume")


def _case(name: str, wrapper: str, sizes: tuple[int, int], **fields) -> None:
    fields = {"title": "MLP 8-16-4", "model": tiny_mlp, "optimizer": sgd_momentum, **fields}
    CASES.add(ResumeCase(name=f"{name}_{sizes[0]}to{sizes[1]}", wrapper=wrapper, world_size=sizes[0],
                         resume_world_size=sizes[1], **fields))


# Same world size, then another: DDP's replicas load whatever the size; FSDP2's shards are
# re-cut by DCP (2 to 4 splits each shard, 4 to 2 joins them).
_case("ddp_sgd_momentum_warmup", "ddp", (2, 2), scheduler=warmup)
_case("ddp_adam", "ddp", (2, 2), optimizer=adam_fast)
_case("ddp_adam_warmup", "ddp", (2, 4), optimizer=adam_fast, scheduler=warmup)
_case("fsdp_sgd_momentum", "fsdp", (2, 2))
_case("fsdp_adam_warmup", "fsdp", (2, 4), optimizer=adam_fast, scheduler=warmup)
_case("fsdp_adam_warmup", "fsdp", (4, 2), optimizer=adam_fast, scheduler=warmup)
_case("fsdp_sgd_momentum_uneven_shapes", "fsdp", (2, 4), title="MLP 8-15-5-4", model=uneven_mlp)
# BatchNorm's per-rank statistics and dropout's per-rank masks are DDP's, on both sides: exact.
_case("ddp_batchnorm_warmup", "ddp", (2, 2), title="MLP 8-16-4 with BatchNorm1d", model=batchnorm_mlp,
      scheduler=warmup, quick=True)
_case("ddp_batchnorm", "ddp", (4, 2), title="MLP 8-16-4 with BatchNorm1d", model=batchnorm_mlp)
_case("ddp_dropout", "ddp", (2, 2), title="MLP 8-16-4 with dropout 0.5", model=dropout_mlp)
_case("ddp_resnet18", "ddp", (2, 2), title="ResNet-18 (torchvision) on 32x32 images", model=resnet18_cifar,
      input_shape=(3, 32, 32), num_classes=CIFAR_CLASSES, batch=4, steps=2, saved_at=1)
_case("ddp_constant_table", "ddp", (2, 2), title="MLP 8-16-4 with a constant non-persistent table", model=TableMlp)
_case("ddp_dropout_torch_save", "ddp", (2, 2), title="MLP 8-16-4 with dropout 0.5", model=dropout_mlp,
      scheduler=warmup, checkpoint=TorchSave())
# Planted: the checkpoint leaves state out, and the checker must name what, right after loading
# (or, for the random state, at the first step that draws from it).
_case("ddp_adam_optimizer_not_saved", "ddp", (2, 2), optimizer=adam_fast, save_optimizer=False,
      expect=_lost("optimizer_state_not_restored"), quick=True)
_case("fsdp_adam_optimizer_not_saved", "fsdp", (2, 4), optimizer=adam_fast, save_optimizer=False,
      expect=_lost("optimizer_state_not_restored"))
_case("ddp_warmup_scheduler_not_saved", "ddp", (2, 2), scheduler=warmup, save_scheduler=False,
      expect=_lost("lr_schedule_not_restored"))
_case("ddp_counter_buffer", "ddp", (2, 2), title="MLP 8-16-4 counting its steps in a non-persistent buffer",
      model=CountingMlp, expect=_lost("non_persistent_buffer_not_restored"))
_case("ddp_torch_save_without_optimizer", "ddp", (2, 2), optimizer=adam_fast,
      checkpoint=TorchSave(optimizer=False), expect=_lost("optimizer_state_not_restored"))
_case("ddp_torch_save_without_scheduler", "ddp", (2, 2), scheduler=warmup,
      checkpoint=TorchSave(scheduler=False), expect=_lost("lr_schedule_not_restored"))
_case("ddp_dropout_torch_save_without_rng", "ddp", (2, 2), title="MLP 8-16-4 with dropout 0.5", model=dropout_mlp,
      checkpoint=TorchSave(rng=False), expect=_lost("rng_state_not_restored"))
