"""FSDP2 equivalence: `fully_shard` on N ranks must train exactly as one process on the whole batch.

The same promise as DDP's, P(x) = 1/N Σ_i f_i(x), with the parameters sharded: each rank
holds 1/N of every parameter, gathers the whole ones for its forward and backward, and keeps
1/N of the averaged gradient. Each rank here trains its shard of the batch beside a
whole-batch reference in one process and compares, after every step, the full parameters
(`full_tensor()`), gradients and buffers with the reference's.

Sharding: each submodule that holds parameters is sharded, then the root. Modules that share a
parameter (tied weights) are not sharded alone: sharding the owner would leave the other user
holding a sharded tensor it cannot use; their closest common ancestor is sharded instead.

The reference starts from the state FSDP trains, built from the sharded parameters' full
tensors: fully_shard does not broadcast, so ranks that built different initial weights shard
different tensors, and `model_fn()` on one rank would be another model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from suite.conformance.parallel.ddp_training import (TrainingJob, _without_sync_batchnorm, compare,
                                                      job_traits, model_traits, rank_device,
                                                      reference_step)


def shard_groups(model: nn.Module) -> list[nn.Module]:
    """The submodules to fully_shard before the root, deepest first (see the module docstring)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append(name)
    tied = [names for names in owners.values() if len(set(names)) > 1]
    tied_owners = {name for names in tied for name in names}
    groups = {name for names in owners.values() for name in names if name and name not in tied_owners}
    for names in tied:
        groups.add(_common_ancestor(names))  # "" is the root, sharded last anyway
    groups.discard("")
    modules = dict(model.named_modules(remove_duplicate=False))
    return [modules[name] for name in sorted(groups, key=lambda n: -n.count("."))]


def _common_ancestor(names: list[str]) -> str:
    prefix = []
    for level in zip(*(name.split(".") for name in names)):
        if len(set(level)) > 1:
            break
        prefix.append(level[0])
    return ".".join(prefix)


def shard(model: nn.Module, fsdp_kwargs: dict) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for module in shard_groups(model):
        fully_shard(module, **fsdp_kwargs)
    return fully_shard(model, **fsdp_kwargs)


def _full(value):
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_tensors(model: nn.Module) -> tuple[dict, dict, dict]:
    """(parameters, gradients, buffers) by name as whole tensors: an all-gather per sharded one,
    in the same order on every rank."""
    params = {n: _full(p.detach()) for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else _full(p.grad) for n, p in model.named_parameters()}
    return params, grads, dict(model.named_buffers())


def _fsdp_step(job: TrainingJob, model, optimizer, step: int, rank: int, world_size: int, device) -> None:
    x, y = job.batch(step)
    micro = job.sharding.micro_batches(step, rank, world_size, len(x))
    optimizer.zero_grad()
    for i, indices in enumerate(micro):
        # Only the last micro-batch reduce-scatters; the others accumulate unsharded gradients.
        model.set_requires_gradient_sync(i == len(micro) - 1)
        loss = job.loss_fn(model(x[indices].to(device)), y[indices].to(device)) * (job.loss_scale / len(micro))
        loss.backward()
    optimizer.step()


def fsdp_train_and_compare(rank: int, world_size: int, job: TrainingJob) -> dict:
    """Run `job` under FSDP2 on this rank (inside an initialised group); every step's comparison."""
    device = rank_device(job.device)
    if device.type == "cuda":  # TF32 would blur the float32 comparison (see ddp_training)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    # Each rank draws different weights on purpose: FSDP trains what the shards hold.
    torch.manual_seed(job.seed + rank)
    model = shard(job.model_fn().to(device), dict(job.fsdp_kwargs or {}))
    reference = _without_sync_batchnorm(job.model_fn())
    reference.load_state_dict({name: _full(value) for name, value in model.state_dict().items()})
    reference.to(device).train()
    optimizer, ref_optimizer = job.optimizer_fn(model.parameters()), job.optimizer_fn(reference.parameters())
    records = []
    for step in range(job.steps):
        reference_step(job, reference, ref_optimizer, step, world_size, device)
        _fsdp_step(job, model, optimizer, step, rank, world_size, device)
        records.append({"step": step + 1, "what": "every tensor",
                        **compare(full_tensors(model), reference, world_size, True, job)})
    return {"rank": rank, "traits": {**model_traits(model), **job_traits(job)}, "records": records}
