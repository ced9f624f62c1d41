"""FSDP2 equivalence: `fully_shard` on N ranks must train exactly as one process on the whole batch.

The same promise as DDP's, P(x) = 1/N Σ_i f_i(x), with the parameters sharded: each rank
holds 1/N of every parameter, gathers the whole ones for its forward and backward, and keeps
1/N of the averaged gradient. Each rank here trains its shard of the batch beside a
whole-batch reference in one process and compares, after every step, the full parameters
(`full_tensor()`), gradients and buffers with the reference's.

Sharding: each submodule that holds parameters is sharded, then the root. A parameter with
several users is not sharded with any of them alone: outside the forward of the module
sharded with it, it is a sharded DTensor that its other users cannot compute with ("mixed
torch.Tensor and DTensor"); their closest common ancestor is sharded instead. Its users are
the modules that hold it (two modules sharing one parameter object) and the modules whose
forward uses it from outside its holder, as a parent does that ties a head by hand,
`F.linear(h, self.proj.weight.t())`. The latter only show when the model runs: `plan_sharding`
runs one forward on a copy of the model under a TorchFunctionMode that sees every parameter
each module's forward passes to a torch function. The plan is made in the parent, once; a
sharding the caller chose (`shard_modules`) is checked against it, and one that cannot work
is a failing verdict naming the parameter and the fix, not a worker's exception.

The reference starts from the state FSDP trains, built from the sharded parameters' full
tensors: fully_shard does not broadcast, so ranks that built different initial weights shard
different tensors, and `model_fn()` on one rank would be another model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from suite.conformance.parallel.ddp_training import TrainingJob, Wrapped, compiled, train_beside_reference


def parameter_users(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, set[str]]:
    """{parameter name: the names of the modules that use it}: the modules that hold it and,
    given an example input, those whose forward passes it to a torch function while not inside
    a module that holds it. The probe runs on a copy, without gradients, the random state kept."""
    import copy

    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    holders: dict[int, set[str]] = {}
    names: dict[int, str] = {}
    probe = copy.deepcopy(model) if example is not None else model
    for module_name, module in probe.named_modules(remove_duplicate=False):
        for local, param in module.named_parameters(recurse=False):
            holders.setdefault(id(param), set()).add(module_name)
            names.setdefault(id(param), f"{module_name}.{local}" if module_name else local)
    users = {id_: set(held) for id_, held in holders.items()}
    if example is None:
        return {names[i]: users[i] for i in names}
    active: list[str] = []

    class SeeParameters(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if active:
                for arg in tree_leaves((args, kwargs or {})):
                    if isinstance(arg, nn.Parameter) and id(arg) in holders and not any(
                            _inside(active[-1], holder) for holder in holders[id(arg)]):
                        users[id(arg)].add(active[-1])
            return func(*args, **(kwargs or {}))

    def entering(name):
        def hook(module, args) -> None:
            active.append(name)
        return hook

    def leaving(module, args, output) -> None:  # a hook returning a value would replace the output
        active.pop()

    handles = []
    for module_name, module in probe.named_modules():
        handles += [module.register_forward_pre_hook(entering(module_name)), module.register_forward_hook(leaving)]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), SeeParameters():
            probe(example)
    finally:
        for handle in handles:
            handle.remove()
    return {names[i]: users[i] for i in names}


@dataclass(frozen=True)
class ShardPlan:
    groups: tuple[str, ...]  # the submodules to fully_shard before the root, deepest first
    problem: str = ""  # set when the sharding cannot work: the parameter, its users and the fix


def plan_sharding(model: nn.Module, example: torch.Tensor | None = None,
                  shard_modules: tuple[str, ...] | None = None) -> ShardPlan:
    """The checker's own sharding (every submodule holding parameters, each parameter with all
    its users: see the module docstring), or `shard_modules` when it works, else its problem."""
    users = parameter_users(model, example)
    if shard_modules is None:
        return ShardPlan(_own_groups(users))
    modules = dict(model.named_modules())
    unknown = [name for name in shard_modules if name not in modules or not name]
    if unknown:
        return ShardPlan((), f"shard_modules names no submodule {', '.join(map(repr, unknown))}")
    for param, used_by in users.items():
        holder = _holder(param, shard_modules)
        outside = sorted(user for user in used_by if not _inside(user, holder))
        if outside:
            common = _common_ancestor(sorted(used_by))
            return ShardPlan((), f"{param} is sharded with {_named(holder)} but used outside it, by "
                                 f"{', '.join(map(_named, outside))}: there it is a sharded DTensor (mixed "
                                 f"torch.Tensor and DTensor); shard it with all its users: leave {holder!r} out "
                                 f"of shard_modules, so that {_named(common)}, their common ancestor, holds it")
    return ShardPlan(_deepest_first(shard_modules))


def plan_for_job(model_fn, example: torch.Tensor, shard_modules: tuple[str, ...] | None = None) -> ShardPlan:
    """The plan, made once in the parent from a model of its own (the random state kept)."""
    with torch.random.fork_rng(devices=[]):
        return plan_sharding(model_fn(), example, shard_modules)


def _deepest_first(names) -> tuple[str, ...]:
    """Deepest first, then by name: every rank shards in the same order."""
    return tuple(sorted(names, key=lambda n: (-n.count("."), n)))


def _named(module_name: str) -> str:
    return repr(module_name) if module_name else "the root"


def _inside(module_name: str, holder: str) -> bool:
    """Whether `module_name` is `holder` or below it ("" is the root, above everything)."""
    return not holder or module_name == holder or module_name.startswith(holder + ".")


def _holder(param: str, shard_modules: tuple[str, ...]) -> str:
    """The innermost sharded module holding `param` ("" for the root)."""
    owner = param.rpartition(".")[0]
    holding = [m for m in shard_modules if _inside(owner, m)]
    return max(holding, key=lambda m: m.count("."), default="")


def _own_groups(users: dict[str, set[str]]) -> tuple[str, ...]:
    shared = [names for names in users.values() if len(names) > 1]
    not_alone = {name for names in shared for name in names}
    groups = {name for names in users.values() for name in names if name and name not in not_alone}
    for names in shared:
        groups.add(_common_ancestor(sorted(names)))  # "" is the root, sharded last anyway
    groups.discard("")
    return _deepest_first(groups)


def shard_groups(model: nn.Module, example: torch.Tensor | None = None) -> list[nn.Module]:
    """The submodules to fully_shard before the root, deepest first (see the module docstring)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    return [modules[name] for name in plan_sharding(model, example).groups]


def _common_ancestor(names: list[str]) -> str:
    prefix = []
    for level in zip(*(name.split(".") for name in names)):
        if len(set(level)) > 1:
            break
        prefix.append(level[0])
    return ".".join(prefix)


def shard(model: nn.Module, fsdp_kwargs: dict, groups: tuple[str, ...] | None = None) -> nn.Module:
    """fully_shard each of `groups` (default: the structural plan), deepest first, then the root."""
    from torch.distributed.fsdp import fully_shard

    modules = dict(model.named_modules(remove_duplicate=False))
    for name in plan_sharding(model).groups if groups is None else groups:
        fully_shard(modules[name], **fsdp_kwargs)
    return fully_shard(model, **fsdp_kwargs)


def whole(value):
    """A DTensor's full tensor (an all-gather); any other value as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_tensors(model: nn.Module) -> tuple[dict, dict, dict]:
    """(parameters, gradients, buffers) by name as whole tensors: an all-gather per sharded one,
    in the same order on every rank."""
    params = {n: whole(p.detach()) for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else whole(p.grad) for n, p in model.named_parameters()}
    return params, grads, dict(model.named_buffers())


def wrap_fsdp(model: nn.Module, device: torch.device, job: TrainingJob) -> Wrapped:
    if job.sharding.scheme == "uneven":
        # Uneven inputs run under DDP's Join; an FSDP2 rank that stopped early would leave the
        # others waiting in their all-gathers.
        raise ValueError("the uneven sharding scheme needs DDP's Join; FSDP2 ranks run every step")
    model = shard(model, dict(job.fsdp_kwargs or {}), job.shard_groups)

    def sync_on(last: bool):
        # FSDP2 has no no_sync(): the flag holds until set again, so every micro-batch sets it.
        model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    forward, finish = compiled(model, job.compile_backend) if job.compile_backend else (model, dict)
    return Wrapped(module=model, forward=forward, sync_on=sync_on, whole_tensors=lambda: full_tensors(model),
                   reference_state=lambda: {name: whole(value) for name, value in model.state_dict().items()},
                   finish=finish)


def fsdp_train_and_compare(rank: int, world_size: int, job: TrainingJob) -> dict:
    """Run `job` under FSDP2 on this rank (inside an initialised group); every step's comparison.
    A sharding that cannot work (the plan's problem, or the mixed-DTensor error of a use the
    probe did not see) is the outcome, for the report to judge, not an exception."""
    if job.sharding_problem:
        return {"rank": rank, "traits": {}, "records": [], "sharding_problem": job.sharding_problem}
    try:
        return train_beside_reference(rank, world_size, job, wrap_fsdp)
    except RuntimeError as error:
        if "mixed torch.Tensor and DTensor" not in str(error):
            raise
        # Every rank runs the same forward and fails at the same operation, so none is left
        # waiting in a collective.
        return {"rank": rank, "traits": {}, "records": [],
                "sharding_problem": f"a parameter is used outside the module sharded with it, in a way the "
                                    f"probe's forward did not show ({str(error).splitlines()[0]}); pass "
                                    f"shard_modules that keep it with all its users"}
