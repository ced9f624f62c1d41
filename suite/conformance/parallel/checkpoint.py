"""What each rank does to save a run and resume it, beside the run that never stopped.

`suite.check_resume` (resume.py) runs `resume_half` twice, on the shared pools:
- the first group trains `saved_at` steps under the job's wrapper (DDP or FSDP2), saves the run
  with the checkpoint functions (the suite's own `DcpCheckpoint` unless the user gives theirs),
  and hands each rank's whole state to the second group beside the checkpoint: every parameter
  and buffer (non-persistent ones too) as whole tensors, the optimizer's and the LR scheduler's
  state dicts, and the random number generators' states ("carried");
- the second group, of the same or another world size, builds two runs on every rank: the
  resumed one, loaded by the checkpoint functions, and the uninterrupted one, which starts from
  the carried state (rank r from what rank r, or r mod the first world size, held) and never
  goes through a checkpoint. Both train the remaining steps under the same wrapper, each with
  its own random state, and are compared right after loading and after every step.

So a resume is judged against the same distributed run that never stopped, not against one
process: per-rank BatchNorm statistics or dropout masks are a property of the wrapper, the same
on both sides (check_ddp_equivalence judges the wrapper against one process).

The comparisons read the optimizer's state from the optimizer itself, by parameter name
(`optimizer_states`), not through DCP's functions, whose loss of state would otherwise hide
behind the same loss on both sides.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils._pytree import tree_map

from suite.conformance.parallel.ddp_training import (TrainingJob, Wrapped, compare, exact_float32, job_traits,
                                                     model_traits, rank_device, rank_step, wrap_ddp)
from suite.conformance.parallel.fsdp import whole, wrap_fsdp

# Added to the seed of the second group's resumed run: other initial weights and another random
# state than the first group's, so whatever its checkpoint does not restore shows.
RESUMED_SEED = 7919


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random number generators a model draws from on `device`: the CPU's, and the GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@dataclass(frozen=True)
class DcpCheckpoint:
    """The suite's own checkpoint: the model, the optimizer and the LR scheduler through
    torch.distributed.checkpoint (DCP), and every rank's random state beside them. DCP's
    `get_state_dict` / `set_state_dict` undo the wrapper (DDP's `module.` prefix, FSDP2's
    shards) and key the optimizer's state by parameter name, so a checkpoint saved on 2 ranks
    loads on 4. `optimizer`/`scheduler` False leave that state out (a planted mistake). A rank
    of a larger group restores the random state of rank r mod `world_size` (the ranks that saved)."""

    world_size: int = 1  # ranks that save
    optimizer: bool = True
    scheduler: bool = True

    def save(self, module: nn.Module, optimizer, scheduler, directory: str) -> None:
        import torch.distributed.checkpoint as dcp

        # Rank 0's copy of each plain tensor: DCP writes one rank's, by default whichever balances
        # its ranks' writes, and DDP's buffers (BatchNorm's running statistics) differ between
        # ranks after a step; rank 0's are those DDP's next forward would broadcast (docs/found.md).
        dcp.save({"run": _DcpState(self, module, optimizer, scheduler)}, checkpoint_id=directory,
                 planner=dcp.DefaultSavePlanner(dedup_save_to_lowest_rank=True))

    def load(self, module: nn.Module, optimizer, scheduler, directory: str) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.load({"run": _DcpState(self, module, optimizer, scheduler)}, checkpoint_id=directory)


class _DcpState:
    """A run as DCP's Stateful protocol wants it: DCP calls state_dict() for what to save (and,
    on load, for the structure to fill in place), then load_state_dict()."""

    def __init__(self, plan: DcpCheckpoint, module: nn.Module, optimizer, scheduler):
        import torch.distributed as dist

        self.plan, self.module, self.optimizer, self.scheduler = plan, module, optimizer, scheduler
        self.device = _module_device(module)
        self.rng_key = f"rank{dist.get_rank() % plan.world_size}"  # the saving rank whose random state this is

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        if self.plan.optimizer:
            model, optimizer = get_state_dict(self.module, self.optimizer)
            state = {"model": model, "optimizer": optimizer}
        else:
            state = {"model": get_model_state_dict(self.module)}
        if self.scheduler is not None and self.plan.scheduler:
            state["scheduler"] = self.scheduler.state_dict()
        # one key per rank: DCP writes a plain tensor under one key once, as if every rank held it
        state["rng"] = {self.rng_key: rng_state(self.device)}
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
        set_rng_state(state["rng"][self.rng_key], self.device)


@dataclass(frozen=True)
class ResumePlan:
    """One half of a resumed run. Saving (loading False): train steps [0, saved_at), save with
    `save_fn` into `path`/checkpoint, carry each rank's state into `path`/carried. Loading: load
    with `load_fn`, and train steps [saved_at, job.steps) beside the run started from what was carried."""

    path: str  # a directory every rank sees
    saved_at: int  # steps trained before the save
    world_size: int  # ranks that save
    save_fn: Callable  # (model, optimizer, scheduler, directory): the wrapped model, as the rank trains it
    load_fn: Callable
    loading: bool = False

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.path, "checkpoint")

    def carried(self, rank: int) -> str:
        return os.path.join(self.path, "carried", f"rank{rank % self.world_size}.pt")


def non_persistent_buffers(model: nn.Module) -> frozenset:
    """The buffers state_dict() leaves out (registered with persistent=False), by name."""
    return frozenset(f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
                     for name in module._non_persistent_buffers_set)


class _Run:
    """One training run on this rank: its model (wrapped), optimizer, scheduler and random state.
    `carried`: the state to start from instead of model_fn's (the uninterrupted run's)."""

    def __init__(self, job: TrainingJob, device: torch.device, carried: dict | None = None):
        self.job, self.device = job, device
        self.model = job.model_fn().to(device)
        if carried is not None:  # before wrapping: DDP broadcasts rank 0's, fully_shard shards what it finds
            with torch.no_grad():
                for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
                    tensor.copy_(carried["tensors"][name])
        wrap = wrap_fsdp if job.fsdp_kwargs is not None else wrap_ddp
        self.wrapped: Wrapped = wrap(self.model, device, job)
        self.optimizer = job.optimizer_fn(self.wrapped.module.parameters())
        self.scheduler = job.scheduler_fn(self.optimizer) if job.scheduler_fn else None
        if carried is not None:
            self.optimizer.load_state_dict(_placed_like(carried["optimizer"], list(self.wrapped.module.parameters())))
            if self.scheduler is not None:
                self.scheduler.load_state_dict(carried["scheduler"])
        self.rng = carried["rng"] if carried is not None else rng_state(device)

    def step(self, step: int, rank: int, world_size: int) -> float:
        """One training step under this run's own random state."""
        set_rng_state(self.rng, self.device)
        loss = rank_step(self.job, self.wrapped, self.optimizer, step, rank, world_size, self.device, self.scheduler)
        self.rng = rng_state(self.device)
        return loss

    def carry(self) -> dict:
        """Everything the uninterrupted run needs to go on elsewhere, as whole tensors (collectives
        under FSDP2, in the same order on every rank)."""
        tensors = {name: whole(t.detach()).clone() for name, t in
                   [*self.model.named_parameters(), *self.model.named_buffers()]}
        optimizer = tree_map(lambda v: whole(v).clone() if isinstance(v, torch.Tensor) else v,
                             self.optimizer.state_dict())
        return {"tensors": tensors, "optimizer": optimizer, "rng": self.rng,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def tensors(self) -> tuple:
        """(parameters, gradients, buffers) as whole tensors, and the optimizer's states."""
        return self.wrapped.whole_tensors(), optimizer_states(self.model, self.optimizer, self.scheduler)


def _placed_like(state: dict, params: list) -> dict:
    """An optimizer state dict of whole tensors, each of a sharded parameter's shape placed as
    that parameter is (FSDP2's DTensor shards)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    placed = {}
    for index, values in state["state"].items():
        param = params[index]
        placed[index] = {key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
                         if isinstance(param, DTensor) and isinstance(value, torch.Tensor)
                         and value.shape == param.shape else value for key, value in values.items()}
    return {**state, "state": placed}


def resume_half(rank: int, world_size: int, job: TrainingJob, plan: ResumePlan) -> dict:
    """This rank's part of one half of a resumed run (see the module docstring): its losses, and
    in the second half the comparisons of the resumed run with the uninterrupted one."""
    device = rank_device(job.device)
    exact_float32(device)
    if not plan.loading:
        torch.manual_seed(job.seed + rank)
        run = _Run(job, device)
        records = [{"step": step + 1, "loss": run.step(step, rank, world_size)} for step in range(plan.saved_at)]
        carried = run.carry()  # the state at the save, before the user's code sees it
        plan.save_fn(run.wrapped.module, run.optimizer, run.scheduler, plan.checkpoint_dir)
        os.makedirs(os.path.dirname(plan.carried(rank)), exist_ok=True)
        torch.save(carried, plan.carried(rank))
        return {"rank": rank, "traits": {**model_traits(run.model), **job_traits(job)}, "records": records}
    torch.manual_seed(job.seed + RESUMED_SEED + rank)
    resumed = _Run(job, device)
    uninterrupted = _Run(job, device, torch.load(plan.carried(rank), weights_only=True, map_location="cpu"))
    set_rng_state(resumed.rng, device)
    plan.load_fn(resumed.wrapped.module, resumed.optimizer, resumed.scheduler, plan.checkpoint_dir)
    resumed.rng = rng_state(device)
    skipped = non_persistent_buffers(resumed.model)

    def compared(with_grads: bool) -> dict:
        (ours, our_optimizer), (theirs, their_optimizer) = resumed.tensors(), uninterrupted.tensors()
        return compare(ours, theirs, 1, with_grads, job, (our_optimizer, their_optimizer), every_buffer=True,
                       non_persistent=skipped)

    rng_differs = [name for name, state in uninterrupted.rng.items() if not torch.equal(state, resumed.rng[name])]
    records = [{"step": plan.saved_at, "what": "state after loading", "rng_differs": rng_differs, **compared(False)}]
    for step in range(plan.saved_at, job.steps):
        loss = resumed.step(step, rank, world_size)
        reference_loss = uninterrupted.step(step, rank, world_size)
        records.append({"step": step + 1, "what": "every tensor", "loss": loss, "reference_loss": reference_loss,
                        **compared(True)})
    return {"rank": rank, "traits": {**model_traits(resumed.model), **job_traits(job)}, "records": records}


def optimizer_states(model: nn.Module, optimizer, scheduler=None) -> tuple[dict, list[float], dict]:
    """({parameter name: {state key: whole tensor}}, each param group's learning rate, the LR
    scheduler's numbers by key: its step count and rates; {} without one).

    `model` is the unwrapped model; under FSDP2 its parameters and their state are DTensors,
    gathered here in the parameters' order, the same on every rank."""
    states = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        states[name] = {key: whole(value).detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
                        for key, value in sorted(state.items())}
    schedule = {} if scheduler is None else {
        key: torch.tensor(value, dtype=torch.float32) for key, value in sorted(scheduler.state_dict().items())
        if isinstance(value, (int, float)) or (isinstance(value, list) and value
                                               and all(isinstance(v, (int, float)) for v in value))}
    return states, [float(group["lr"]) for group in optimizer.param_groups], schedule
