"""Declared resumed runs: train, save with torch.distributed.checkpoint, resume, and equal a run that never stopped.

Each case trains `saved_at` steps on `world_size` ranks (DDP or FSDP2), saves the model, the
optimizer and the LR scheduler with DCP, loads them into a fresh group of `resume_world_size`
ranks and trains the remaining steps (suite.conformance.parallel.resume). A planted case
leaves something out of the checkpoint, as users do by mistake, and the checker must name what.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.expect import FAILS, Expect, describe, fails, validate
from suite.cases.parallel import CLASSES, FEATURES, OptimizerSpec, sgd_momentum, tiny_mlp, uneven_mlp
from suite.cases.registry import Registry

RESUME_CHECKS = ("resume",)
# What a checkpoint can fail to restore: the checker names one when the state right after loading
# is not the state saved (suite.conformance.parallel.resume explains each and its fix).
RESUME_CAUSES = {
    "optimizer_state_not_restored": "the optimizer's state is not in the checkpoint: momentum and Adam's "
                                    "moments start again from zero after the resume",
    "lr_schedule_not_restored": "the LR scheduler's state is not in the checkpoint: the schedule starts again",
    "parameters_not_restored": "the model's parameters or buffers after loading are not those saved",
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
        return (f"{'FSDP2' if self.wrapper == 'fsdp' else 'DDP'}: {self.title}, {self.optimizer}{schedule}, "
                f"{self.saved_at} steps on {self.world_size} ranks, DCP save"
                f"{' without the ' + ' and '.join(lost) if lost else ''}, resumed on {self.resume_world_size} "
                f"ranks for {self.steps - self.saved_at}: {describe(self.expect)}")


CASES: Registry[ResumeCase] = Registry("resume")


def _case(name: str, wrapper: str, sizes: tuple[int, int], **fields) -> None:
    fields = {"title": "MLP 8-16-4", "model": tiny_mlp, "optimizer": sgd_momentum, **fields}
    CASES.add(ResumeCase(name=f"{name}_{sizes[0]}to{sizes[1]}", wrapper=wrapper, world_size=sizes[0],
                         resume_world_size=sizes[1], **fields))


# Same world size, then another: DDP's replicas load whatever the size; FSDP2's shards are
# re-cut by DCP (2 to 4 splits each shard, 4 to 2 joins them).
_case("ddp_sgd_momentum_warmup", "ddp", (2, 2), scheduler=warmup, quick=True)
_case("ddp_adam", "ddp", (2, 2), optimizer=adam_fast)
_case("ddp_adam_warmup", "ddp", (2, 4), optimizer=adam_fast, scheduler=warmup)
_case("fsdp_sgd_momentum", "fsdp", (2, 2))
_case("fsdp_adam_warmup", "fsdp", (2, 4), optimizer=adam_fast, scheduler=warmup)
_case("fsdp_adam_warmup", "fsdp", (4, 2), optimizer=adam_fast, scheduler=warmup)
_case("fsdp_sgd_momentum_uneven_shapes", "fsdp", (2, 4), title="MLP 8-15-5-4", model=uneven_mlp)
# Planted: the checkpoint leaves state out, and the checker must name what, right after loading.
_case("ddp_adam_optimizer_not_saved", "ddp", (2, 2), optimizer=adam_fast, save_optimizer=False,
      expect=_lost("optimizer_state_not_restored"), quick=True)
_case("fsdp_adam_optimizer_not_saved", "fsdp", (2, 4), optimizer=adam_fast, save_optimizer=False,
      expect=_lost("optimizer_state_not_restored"))
_case("ddp_warmup_scheduler_not_saved", "ddp", (2, 2), scheduler=warmup, save_scheduler=False,
      expect=_lost("lr_schedule_not_restored"))
