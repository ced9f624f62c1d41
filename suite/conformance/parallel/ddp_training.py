"""What each rank runs: DDP training beside a whole-batch reference, compared after every step.

`train_beside_reference` is the rank loop that DDP (here) and FSDP2 (fsdp.py) share: seeding,
the reference, each rank's shard in micro-batches, the comparisons. Each wrapper hands it a
`Wrapped`: the wrapped model and its own ways to skip a gradient sync, to see whole tensors
and to give the reference its starting state.

Every rank trains its own copy of the reference (the whole batch, one process, no DDP) from
the state DDP starts from, so each rank checks itself locally. Comparing against a reference
held by rank 0 would need collectives, and collectives cannot be issued while a Join context
shadows DDP's own.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

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
    comm_hook: str = ""  # a DDP communication hook, by name (COMM_HOOKS)
    compile_backend: str | None = None  # set: the DDP (or FSDP2) module runs under torch.compile with this backend
    fsdp_kwargs: dict | None = None  # set: FSDP2 (fully_shard) instead of DDP
    reference_dtype: torch.dtype | None = None  # run the reference's forward in this precision
    rtol: float | None = None  # a declared tolerance; None: assert_close's for the dtype
    atol: float | None = None
    scheduler_fn: object = None  # optimizer -> LR scheduler, stepped after every optimizer step
    shard_groups: tuple[str, ...] | None = None  # FSDP2: the submodules to shard (fsdp.plan_sharding)
    sharding_problem: str = ""  # FSDP2: why the requested sharding cannot work; nothing is run

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


MIXED_PRECISION_FIELDS = ("param_dtype", "reduce_dtype", "output_dtype")


def job_traits(job: TrainingJob) -> dict:
    """Features of the job itself that make it differ from the float32 reference by design.
    mixed_precision: the mp_policy's fields that leave float32, as "reduce_dtype=bfloat16"
    ("" when none); a param_dtype the reference also runs in (reference_dtype) is matched."""
    policy = (job.fsdp_kwargs or {}).get("mp_policy")
    lowered = [f"{name}={str(dtype).removeprefix('torch.')}" for name in MIXED_PRECISION_FIELDS
               if (dtype := getattr(policy, name, None)) not in (None, torch.float32)
               and not (name == "param_dtype" and dtype == job.reference_dtype)]
    return {"compression": job.comm_hook in ("fp16_compress", "bf16_compress", "powersgd"),
            "mixed_precision": ", ".join(lowered), "compiled": job.compile_backend or "",
            "wrapper": "DDP" if job.fsdp_kwargs is None else "FSDP2"}


def local_tensors(model: nn.Module) -> tuple[dict, dict, dict]:
    """(parameters, gradients, buffers) by name, as this rank holds them (DDP: whole tensors)."""
    params = dict(model.named_parameters())
    return params, {n: p.grad for n, p in params.items()}, dict(model.named_buffers())


def compare(ours: tuple[dict, dict, dict], theirs: tuple[dict, dict, dict], world_size: int, with_grads: bool,
            job: TrainingJob, optimizers: tuple | None = None, every_buffer: bool = False,
            non_persistent: frozenset = frozenset()) -> dict:
    """Max abs differences per category and the first tensor that is not close, by the job's
    tolerance. `ours`, `theirs`: (parameters, gradients, buffers) by name, whole tensors; theirs
    name what is compared. `optimizers`: (ours, theirs), each as checkpoint.optimizer_states
    gives them, to compare too. Buffers: the floating ones, or every one (counters too) with
    `every_buffer`; those named in `non_persistent` are the category "non-persistent buffer".

    Order: gradients, then buffers, optimizer state, learning rates, scheduler state, then parameters: a wrong
    gradient or optimizer state is the cause of a wrong parameter, so it is the one to name. A
    missing gradient or optimizer state counts as zeros (an unused layer, a fresh optimizer).
    """
    def close(a, b):
        return mismatch(a, b, rtol=job.rtol, atol=job.atol) is None

    found = {"max": {}, "first": None, "grads_scaled_by_world_size": False, "dtypes": []}
    (named, our_grads, buffers), (their_params, their_grads, their_buffers) = ours, theirs
    pairs = []
    if with_grads:
        grads = []
        for name, their_param in their_params.items():
            mine, other = our_grads[name], their_grads[name]
            mine = torch.zeros_like(named[name]) if mine is None else mine.detach()
            other = torch.zeros_like(their_param) if other is None else other.detach()
            grads.append((mine, other))
            pairs.append(("gradient", name, mine, other))
        found["grads_scaled_by_world_size"] = world_size > 1 and all(
            close(mine * world_size, other) for mine, other in grads) and not all(
            close(mine, other) for mine, other in grads)
    pairs += [("non-persistent buffer" if name in non_persistent else "buffer", name, buffers[name], buf)
              for name, buf in their_buffers.items() if every_buffer or buf.is_floating_point()]
    if optimizers is not None:
        pairs += _optimizer_pairs(*optimizers)
    pairs += [("parameter", name, named[name].detach(), p.detach()) for name, p in their_params.items()]
    found["dtypes"] = sorted({str(other.dtype).removeprefix("torch.") for _, _, _, other in pairs
                              if other.is_floating_point()} or {"float32"})
    for category, name, mine, other in pairs:
        diff = max_abs_diff(mine, other)
        found["max"][category] = max(found["max"].get(category, 0.0), diff)
        if found["first"] is None and not close(mine, other):
            found["first"] = (category, name, diff)
    return found


def _optimizer_pairs(ours: tuple[dict, list, dict], theirs: tuple[dict, list, dict]) -> list[tuple]:
    (our_states, our_lrs, our_schedule), (their_states, their_lrs, their_schedule) = ours, theirs
    pairs = []
    for name, state in their_states.items():
        for key, value in state.items():
            mine = our_states.get(name, {}).get(key)
            pairs.append(("optimizer state", f"{name} {key}",
                          torch.zeros_like(value) if mine is None else mine.to(value.dtype), value))
    pairs += [("learning rate", f"param group {i}", torch.tensor(a), torch.tensor(b))
              for i, (a, b) in enumerate(zip(our_lrs, their_lrs))]
    pairs += [("scheduler state", key, our_schedule.get(key, torch.zeros_like(value)), value)
              for key, value in their_schedule.items()]
    return pairs


def reference_step(job: TrainingJob, reference, optimizer, step: int, world_size: int,
                   device, scheduler=None) -> float:
    """One step of the single process on the whole batch (in job.reference_dtype, if set:
    parameters and inputs cast for the forward, as a mixed-precision policy does); its loss."""
    x, y = job.batch(step)
    indices, scale = job.sharding.reference(step, world_size, len(x), job.steps)
    optimizer.zero_grad()
    inputs = x[indices].to(device)
    if job.reference_dtype is None:
        out = reference(inputs)
    else:
        cast = {n: p.to(job.reference_dtype) for n, p in reference.named_parameters()}
        out = torch.func.functional_call(reference, cast, (inputs.to(job.reference_dtype),))
    loss = job.loss_fn(out, y[indices].to(device)) * scale
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


COMM_HOOKS = ("allreduce", "fp16_compress", "bf16_compress", "powersgd")


def register_comm_hook(ddp, name: str) -> None:
    """The named DDP communication hook, on the default group."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if name not in COMM_HOOKS:
        raise ValueError(f"unknown comm hook {name!r}; valid: {', '.join(COMM_HOOKS)}")
    if name == "powersgd":
        # Rank-1 approximation from the second step on (the first is a plain allreduce, which
        # PowerSGD needs to start its error feedback from).
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1,
                                            start_powerSGD_iter=2, min_compression_rate=0)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    else:
        ddp.register_comm_hook(None, getattr(default_hooks, f"{name}_hook"))


@dataclass(frozen=True)
class Wrapped:
    """What a wrapper (DDP, FSDP2) hands the shared rank loop; the rest of the loop is the same."""

    module: nn.Module  # the wrapped model: the optimizer steps its parameters
    forward: Callable  # runs a micro-batch: the module, or the module compiled
    # The context of a micro-batch, given whether it is the step's last: only the last
    # synchronises gradients, the others accumulate locally.
    sync_on: Callable[[bool], contextlib.AbstractContextManager]
    whole_tensors: Callable[[], tuple[dict, dict, dict]]  # (parameters, gradients, buffers) by name
    reference_state: Callable[[], dict]  # the state the reference starts from: what the ranks train
    # Around the whole loop: DDP's Join, for ranks whose inputs run out early.
    joined: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)
    finish: Callable[[], dict] = dict  # entries for the rank's outcome, once the loop is done


def rank_step(job: TrainingJob, wrapped: Wrapped, optimizer, step: int, rank: int, world_size: int,
              device, scheduler=None) -> float:
    """One step of the article's loop on this rank's shard, in the sharding's micro-batches; the
    shard's loss (its micro-batches' mean, before loss_scale)."""
    x, y = job.batch(step)
    micro = job.sharding.micro_batches(step, rank, world_size, len(x))
    optimizer.zero_grad()
    total = 0.0
    for i, indices in enumerate(micro):
        with wrapped.sync_on(i == len(micro) - 1):
            out = wrapped.forward(x[indices].to(device))
            loss = job.loss_fn(out, y[indices].to(device)) / len(micro)
            (loss * job.loss_scale).backward()
            total += loss.item()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return total


def exact_float32(device: torch.device) -> None:
    """TF32 off: it rounds to 10 mantissa bits, and a shard and the whole batch may pick different
    kernels, so float32 tolerances would measure TF32, not data parallelism."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def train_beside_reference(rank: int, world_size: int, job: TrainingJob,
                           wrap: Callable[[nn.Module, torch.device, TrainingJob], Wrapped]) -> dict:
    """Run `job` on this rank (inside an initialised group), its model wrapped by `wrap`, beside a
    whole-batch reference; the comparisons of every step."""
    device = rank_device(job.device)
    exact_float32(device)
    # Each rank draws different weights on purpose: DDP must start every rank from rank 0's, and
    # FSDP2 trains what the shards hold.
    torch.manual_seed(job.seed + rank)
    model = job.model_fn().to(device)
    wrapped = wrap(model, device, job)
    reference = _without_sync_batchnorm(job.model_fn())
    reference.load_state_dict(wrapped.reference_state())
    reference.to(device).train()
    optimizer = job.optimizer_fn(wrapped.module.parameters())
    ref_optimizer = job.optimizer_fn(reference.parameters())
    scheduler, ref_scheduler = ((job.scheduler_fn(optimizer), job.scheduler_fn(ref_optimizer))
                                if job.scheduler_fn else (None, None))
    own_steps = job.sharding.steps_of_rank(rank, job.steps)
    records = []
    with wrapped.joined:
        for step in range(job.steps):
            reference_loss = reference_step(job, reference, ref_optimizer, step, world_size, device, ref_scheduler)
            if step < own_steps:
                loss = rank_step(job, wrapped, optimizer, step, rank, world_size, device, scheduler)
                records.append({"step": step + 1, "what": "every tensor", "loss": loss,
                                "reference_loss": reference_loss,
                                **compare(wrapped.whole_tensors(), local_tensors(reference), world_size, True, job)})
    if own_steps < job.steps:
        # A rank that ran out takes the last one's parameters when Join ends; its gradients
        # are stale by design, so only parameters and buffers are compared.
        records.append({"step": job.steps, "what": "final parameters and buffers",
                        **compare(wrapped.whole_tensors(), local_tensors(reference), world_size, False, job)})
    return {"rank": rank, "traits": {**model_traits(model), **job_traits(job)}, "records": records,
            **wrapped.finish()}


def compiled(ddp, backend_name: str) -> tuple[Callable, Callable[[], dict]]:
    """ddp (or an FSDP2 module) under torch.compile, and a finish hook that reports how many graphs the backend got
    and, when it got none, why (suite.conformance.compile.dynamo_log)."""
    from torch import _dynamo

    from suite.conformance.compile.backends import lookup
    from suite.conformance.compile.dynamo_log import watch_dynamo

    _dynamo.reset()  # the pool's worker lives on: no earlier job's graphs may answer
    backend = lookup(backend_name)  # the suite's own backends by name too
    graphs = []
    watching = contextlib.ExitStack()
    seen = watching.enter_context(watch_dynamo())

    def counting_backend(graph, example_inputs):  # DDPOptimizer calls it once per bucket's graph
        graphs.append(graph)
        return backend(graph, example_inputs)

    def finish() -> dict:
        watching.close()
        count = len(graphs)
        _dynamo.reset()
        return {"compiled_graphs": count, **({"not_compiled": seen.not_compiled_reason()} if not count else {})}

    return torch.compile(ddp, backend=counting_backend), finish


def wrap_ddp(model: nn.Module, device: torch.device, job: TrainingJob) -> Wrapped:
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, device_ids=[device] if device.type == "cuda" else None, **job.ddp_kwargs)
    if job.comm_hook:
        register_comm_hook(ddp, job.comm_hook)
    forward, finish = compiled(ddp, job.compile_backend) if job.compile_backend else (ddp, dict)
    return Wrapped(module=ddp, forward=forward,
                   sync_on=lambda last: contextlib.nullcontext() if last else ddp.no_sync(),
                   whole_tensors=lambda: local_tensors(model),
                   reference_state=model.state_dict,  # rank 0's state, as DDP broadcast it
                   joined=Join([ddp]) if job.sharding.scheme == "uneven" else contextlib.nullcontext(),
                   finish=finish)


def train_and_compare(rank: int, world_size: int, job: TrainingJob) -> dict:
    """Run `job` under DDP on this rank (inside an initialised group); every step's comparison."""
    return train_beside_reference(rank, world_size, job, wrap_ddp)
