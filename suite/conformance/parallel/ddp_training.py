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
from suite.conformance.parallel import checkpoint
from suite.conformance.parallel.checkpoint import ResumePlan
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
    resume: ResumePlan | None = None  # set: one half of a run saved and resumed (checkpoint.py)
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


def compare(ours: tuple[dict, dict, dict], reference: nn.Module, world_size: int, with_grads: bool,
            job: TrainingJob, optimizers: tuple | None = None) -> dict:
    """Max abs differences per category and the first tensor that is not close, by the job's
    tolerance. `ours`: (parameters, gradients, buffers) by name, whole tensors. `optimizers`:
    (ours, the reference's), each as checkpoint.optimizer_states gives them, to compare too.

    Order: gradients, then buffers, optimizer state, learning rates, scheduler state, then parameters: a wrong
    gradient or optimizer state is the cause of a wrong parameter, so it is the one to name. A
    missing gradient or optimizer state counts as zeros (an unused layer, a fresh optimizer).
    """
    def close(a, b):
        return mismatch(a, b, rtol=job.rtol, atol=job.atol) is None

    found = {"max": {}, "first": None, "grads_scaled_by_world_size": False, "dtypes": []}
    named, our_grads, buffers = ours
    pairs = []
    if with_grads:
        grads = []
        for name, ref_param in reference.named_parameters():
            ours, theirs = our_grads[name], ref_param.grad
            ours = torch.zeros_like(named[name]) if ours is None else ours.detach()
            theirs = torch.zeros_like(ref_param) if theirs is None else theirs.detach()
            grads.append((ours, theirs))
            pairs.append(("gradient", name, ours, theirs))
        found["grads_scaled_by_world_size"] = world_size > 1 and all(
            close(ours * world_size, theirs) for ours, theirs in grads) and not all(
            close(ours, theirs) for ours, theirs in grads)
    pairs += [("buffer", name, buffers[name], buf) for name, buf in reference.named_buffers()
              if buf.is_floating_point()]
    if optimizers is not None:
        pairs += _optimizer_pairs(*optimizers)
    pairs += [("parameter", name, named[name].detach(), p.detach())
              for name, p in reference.named_parameters()]
    found["dtypes"] = sorted({str(theirs.dtype).removeprefix("torch.") for _, _, _, theirs in pairs})
    for category, name, ours, theirs in pairs:
        diff = max_abs_diff(ours, theirs)
        found["max"][category] = max(found["max"].get(category, 0.0), diff)
        if found["first"] is None and not close(ours, theirs):
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


def _rank_step(job: TrainingJob, wrapped: Wrapped, optimizer, step: int, rank: int, world_size: int,
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


def train_beside_reference(rank: int, world_size: int, job: TrainingJob,
                           wrap: Callable[[nn.Module, torch.device, TrainingJob], Wrapped]) -> dict:
    """Run `job` on this rank (inside an initialised group), its model wrapped by `wrap`, beside a
    whole-batch reference; the comparisons of every step."""
    device = rank_device(job.device)
    if device.type == "cuda":
        # TF32 rounds to 10 mantissa bits, and a shard and the whole batch may pick different
        # kernels: the float32 tolerances would then measure TF32, not data parallelism.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    # Each rank draws different weights on purpose: DDP must start every rank from rank 0's, and
    # FSDP2 trains what the shards hold.
    torch.manual_seed(job.seed + rank)
    model = job.model_fn().to(device)
    wrapped = wrap(model, device, job)
    reference = _without_sync_batchnorm(job.model_fn())
    resume = job.resume
    start = resume.reference_start if resume and resume.loading else wrapped.reference_state()
    reference.load_state_dict(start)
    start_copy = {name: value.detach().clone() for name, value in start.items()} if resume else None
    reference.to(device).train()
    optimizer = job.optimizer_fn(wrapped.module.parameters())
    ref_optimizer = job.optimizer_fn(reference.parameters())
    scheduler, ref_scheduler = ((job.scheduler_fn(optimizer), job.scheduler_fn(ref_optimizer))
                                if job.scheduler_fn else (None, None))

    def optimizers():  # compared only where a checkpoint may have lost them
        return None if resume is None else (checkpoint.optimizer_states(model, optimizer, scheduler),
                                            checkpoint.optimizer_states(reference, ref_optimizer, ref_scheduler))

    steps = resume.steps(job.steps) if resume else range(job.steps)
    own_steps = job.sharding.steps_of_rank(rank, job.steps)
    records = []
    if resume and resume.loading:
        for step in range(steps.start):  # the uninterrupted run up to the save
            reference_step(job, reference, ref_optimizer, step, world_size, device, ref_scheduler)
        checkpoint.load(resume, wrapped.module, optimizer, scheduler)
        records.append({"step": steps.start, "what": "state after loading",
                        **compare(wrapped.whole_tensors(), reference, world_size, False, job, optimizers())})
    with wrapped.joined:
        for step in steps:
            reference_loss = reference_step(job, reference, ref_optimizer, step, world_size, device, ref_scheduler)
            if step < own_steps:
                loss = _rank_step(job, wrapped, optimizer, step, rank, world_size, device, scheduler)
                records.append({"step": step + 1, "what": "every tensor", "loss": loss,
                                "reference_loss": reference_loss,
                                **compare(wrapped.whole_tensors(), reference, world_size, True, job, optimizers())})
    if own_steps < job.steps:
        # A rank that ran out takes the last one's parameters when Join ends; its gradients
        # are stale by design, so only parameters and buffers are compared.
        records.append({"step": job.steps, "what": "final parameters and buffers",
                        **compare(wrapped.whole_tensors(), reference, world_size, False, job)})
    if resume and not resume.loading:
        checkpoint.save(resume, wrapped.module, optimizer, scheduler)
    # DDP's state_dict() shares the parameters' storage: the copy taken at the start, not what trained.
    saved = {"reference_start": start_copy} if resume and not resume.loading and rank == 0 else {}
    return {"rank": rank, "traits": {**model_traits(model), **job_traits(job)}, "records": records,
            **saved, **wrapped.finish()}


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


def _wrap_ddp(model: nn.Module, device: torch.device, job: TrainingJob) -> Wrapped:
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
    return train_beside_reference(rank, world_size, job, _wrap_ddp)
