"""What each rank does to save and resume a run with torch.distributed.checkpoint (DCP).

`suite.check_resume` (resume.py) runs the shared rank loop (ddp_training.train_beside_reference)
twice: a first group trains `saved_at` steps and saves here; a fresh group, of the same or
another world size, loads here and trains the rest. The model and optimizer go through DCP's
own `get_state_dict` / `set_state_dict`, which undo the wrapper (DDP's `module.` prefix,
FSDP2's shards) and key the optimizer's state by parameter name, so that a checkpoint
saved on 2 ranks loads on 4; the LR scheduler's state goes beside them, as users save it.

The rank loop also compares the optimizer's state and the learning rate with the uninterrupted
reference's, by parameter name (`optimizer_states`), from the optimizer itself: not through
DCP's functions, whose loss of state would otherwise hide behind the same loss on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class ResumePlan:
    """One half of a resumed run. Saving (loading False): train steps [0, saved_at), then save
    at `path`. Loading: load from `path`, train steps [saved_at, job.steps); the reference
    replays the first saved_at steps from `reference_start`, the state the first half's
    reference started from (uninterrupted: it is never saved nor loaded)."""

    path: str  # the DCP checkpoint's directory, on a file system every rank sees
    saved_at: int  # steps trained before the save
    loading: bool = False
    reference_start: dict | None = None  # loading: the first half's starting state, whole tensors
    optimizer: bool = True  # whether the checkpoint holds the optimizer's state
    scheduler: bool = True  # whether it holds the LR scheduler's

    def steps(self, total: int) -> range:
        """The steps this half trains."""
        return range(self.saved_at, total) if self.loading else range(self.saved_at)


class TrainingState:
    """The run's state as DCP's Stateful protocol wants it: DCP calls state_dict() for what to
    save (and, on load, for the structure to fill in place), then load_state_dict()."""

    def __init__(self, module: nn.Module, optimizer, scheduler, plan: ResumePlan):
        self.module, self.optimizer, self.scheduler, self.plan = module, optimizer, scheduler, plan

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        if self.plan.optimizer:
            model, optimizer = get_state_dict(self.module, self.optimizer)
            state = {"model": model, "optimizer": optimizer}
        else:
            state = {"model": get_model_state_dict(self.module)}
        if self.scheduler is not None and self.plan.scheduler:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

        if "optimizer" in state:
            set_state_dict(self.module, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"])
        else:
            set_model_state_dict(self.module, state["model"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


def save(plan: ResumePlan, module: nn.Module, optimizer, scheduler) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save({"run": TrainingState(module, optimizer, scheduler, plan)}, checkpoint_id=plan.path)


def load(plan: ResumePlan, module: nn.Module, optimizer, scheduler) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.load({"run": TrainingState(module, optimizer, scheduler, plan)}, checkpoint_id=plan.path)


def _full(value):
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def optimizer_states(model: nn.Module, optimizer, scheduler=None) -> tuple[dict, list[float], dict]:
    """({parameter name: {state key: whole tensor}}, each param group's learning rate, the LR
    scheduler's numbers by key: its step count and rates; {} without one).

    `model` is the unwrapped model (names as the reference's); under FSDP2 its parameters and
    their state are DTensors, gathered here in the parameters' order, the same on every rank."""
    states = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        states[name] = {key: _full(value).detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
                        for key, value in sorted(state.items())}
    schedule = {} if scheduler is None else {
        key: torch.tensor(value, dtype=torch.float32) for key, value in sorted(scheduler.state_dict().items())
        if isinstance(value, (int, float)) or (isinstance(value, list) and value
                                               and all(isinstance(v, (int, float)) for v in value))}
    return states, [float(group["lr"]) for group in optimizer.param_groups], schedule
