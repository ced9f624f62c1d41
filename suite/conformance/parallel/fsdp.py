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

import contextlib

import torch
import torch.nn as nn

from suite.conformance.parallel.ddp_training import TrainingJob, Wrapped, train_beside_reference


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


def _wrap_fsdp(model: nn.Module, device: torch.device, job: TrainingJob) -> Wrapped:
    if job.sharding.scheme == "uneven":
        # Uneven inputs run under DDP's Join; an FSDP2 rank that stopped early would leave the
        # others waiting in their all-gathers.
        raise ValueError("the uneven sharding scheme needs DDP's Join; FSDP2 ranks run every step")
    model = shard(model, dict(job.fsdp_kwargs or {}))

    def sync_on(last: bool):
        # FSDP2 has no no_sync(): the flag holds until set again, so every micro-batch sets it.
        model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    return Wrapped(module=model, forward=model, sync_on=sync_on, whole_tensors=lambda: full_tensors(model),
                   reference_state=lambda: {name: _full(value) for name, value in model.state_dict().items()})


def fsdp_train_and_compare(rank: int, world_size: int, job: TrainingJob) -> dict:
    """Run `job` under FSDP2 on this rank (inside an initialised group); every step's comparison."""
    return train_beside_reference(rank, world_size, job, _wrap_fsdp)
