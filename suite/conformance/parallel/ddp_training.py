"""What each rank runs: DDP training beside a whole-batch reference, compared after every step.

Every rank trains its own copy of the reference (the whole batch, one process, no DDP) from
the state DDP starts from, so each rank checks itself locally. Comparing against a reference
held by rank 0 would need collectives, and collectives cannot be issued while a Join context
shadows DDP's own.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from suite.conformance.closeness import max_abs_diff, mismatch
from suite.conformance.parallel.sharding import Sharding

@dataclass(frozen=True)
class TrainingJob:
    """Everything a rank needs; picklable, its callables module-level."""

    model_fn: object
    loss_fn: object
    optimizer_fn: object
    inputs: tuple  # one global batch per step (or, for the sampler scheme, the data set)
    targets: tuple
    steps: int
    ddp_kwargs: dict = field(default_factory=dict)
    device: str = "cpu"
    sharding: Sharding = Sharding()
    loss_scale: float = 1.0  # on each rank's loss, never the reference's
    seed: int = 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = min(step, len(self.inputs) - 1)
        return self.inputs[i], self.targets[i]


class _AnyDimBatchNorm(_BatchNorm):
    """Plain (unsynchronised) BatchNorm for any input rank: SyncBatchNorm's single-process twin."""

    def _check_input_dim(self, input):
        pass


def _without_sync_batchnorm(module: nn.Module) -> nn.Module:
    """The reference normalises over the whole batch in one process, so it needs no syncing."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = _AnyDimBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _without_sync_batchnorm(child)
    return module


def model_traits(model: nn.Module) -> dict:
    """Features that make per-shard training differ from whole-batch training by design."""
    return {
        "batchnorm": any(isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
                         and m.training for m in model.modules()),
        "dropout": any(isinstance(m, _DropoutNd) and m.p > 0 and m.training
                       for m in model.modules()),
    }


def rank_device(device: str) -> torch.device:
    """The pool worker and the torchrun entry both select this rank's GPU before any work."""
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return mismatch(a, b) is None


def compare(model: nn.Module, reference: nn.Module, world_size: int, with_grads: bool) -> dict:
    """Max abs differences per category and the first tensor that is not close.

    Order: gradients, then buffers, then parameters: a wrong gradient is the cause of a wrong
    parameter, so it is the one to name. A missing gradient counts as zeros (an unused layer).
    """
    found = {"max": {}, "first": None, "grads_scaled_by_world_size": False}
    named = dict(model.named_parameters())
    pairs = []
    if with_grads:
        grads = []
        for name, ref_param in reference.named_parameters():
            ours, theirs = named[name].grad, ref_param.grad
            ours = torch.zeros_like(named[name]) if ours is None else ours.detach()
            theirs = torch.zeros_like(ref_param) if theirs is None else theirs.detach()
            grads.append((ours, theirs))
            pairs.append(("gradient", name, ours, theirs))
        found["grads_scaled_by_world_size"] = world_size > 1 and all(
            _close(ours * world_size, theirs) for ours, theirs in grads) and not all(
            _close(ours, theirs) for ours, theirs in grads)
    buffers = dict(model.named_buffers())
    pairs += [("buffer", name, buffers[name], buf) for name, buf in reference.named_buffers()
              if buf.is_floating_point()]
    pairs += [("parameter", name, named[name].detach(), p.detach())
              for name, p in reference.named_parameters()]
    for category, name, ours, theirs in pairs:
        diff = max_abs_diff(ours, theirs)
        found["max"][category] = max(found["max"].get(category, 0.0), diff)
        if found["first"] is None and not _close(ours, theirs):
            found["first"] = (category, name, diff)
    return found


def _reference_step(job: TrainingJob, reference, optimizer, step: int, world_size: int,
                    device) -> None:
    x, y = job.batch(step)
    indices, scale = job.sharding.reference(step, world_size, len(x), job.steps)
    optimizer.zero_grad()
    loss = job.loss_fn(reference(x[indices].to(device)), y[indices].to(device)) * scale
    loss.backward()
    optimizer.step()


def _ddp_step(job: TrainingJob, ddp, optimizer, step: int, rank: int, world_size: int,
              device) -> None:
    x, y = job.batch(step)
    micro = job.sharding.micro_batches(step, rank, world_size, len(x))
    optimizer.zero_grad()
    for i, indices in enumerate(micro):
        # Only the last micro-batch all-reduces; the others accumulate locally.
        sync = contextlib.nullcontext() if i == len(micro) - 1 else ddp.no_sync()
        with sync:
            out = ddp(x[indices].to(device))
            loss = job.loss_fn(out, y[indices].to(device)) * (job.loss_scale / len(micro))
            loss.backward()
    optimizer.step()


def train_and_compare(rank: int, world_size: int, job: TrainingJob) -> dict:
    """Run `job` on this rank (inside an initialised group); the comparisons of every step."""
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = rank_device(job.device)
    if device.type == "cuda":
        # TF32 rounds to 10 mantissa bits, and a shard and the whole batch may pick different
        # kernels: the float32 tolerances would then measure TF32, not DDP.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    # Each rank draws different weights on purpose: DDP must start every rank from rank 0's.
    torch.manual_seed(job.seed + rank)
    model = job.model_fn().to(device)
    ddp = DDP(model, device_ids=[device] if device.type == "cuda" else None, **job.ddp_kwargs)
    reference = _without_sync_batchnorm(job.model_fn())
    reference.load_state_dict(model.state_dict())  # rank 0's state, as DDP broadcast it
    reference.to(device).train()
    optimizer, ref_optimizer = job.optimizer_fn(ddp.parameters()), job.optimizer_fn(reference.parameters())

    own_steps = job.sharding.steps_of_rank(rank, job.steps)
    records = []
    joinable = Join([ddp]) if job.sharding.scheme == "uneven" else contextlib.nullcontext()
    with joinable:
        for step in range(job.steps):
            _reference_step(job, reference, ref_optimizer, step, world_size, device)
            if step < own_steps:
                _ddp_step(job, ddp, optimizer, step, rank, world_size, device)
                records.append({"step": step + 1, "what": "every tensor",
                                **compare(model, reference, world_size, with_grads=True)})
    if own_steps < job.steps:
        # A rank that ran out takes the last one's parameters when Join ends; its gradients
        # are stale by design, so only parameters and buffers are compared.
        records.append({"step": job.steps, "what": "final parameters and buffers",
                        **compare(model, reference, world_size, with_grads=False)})
    return {"rank": rank, "traits": model_traits(model), "records": records}
