"""Checkpoints that resume: a run saved and resumed, on the same or another world size, must
train as the same distributed run that never stopped.

`check_resume` trains `saved_at` steps under DDP or FSDP2, saves the model, the optimizer, the
LR scheduler and the random state (with DCP, or with the user's own `save_fn`), loads them into
a fresh group of `resume_world_size` ranks (with `load_fn`) and trains the remaining steps. Beside
the resumed run, on the same ranks and under the same wrapper, the uninterrupted run trains the
same steps from the state the first group held at the save, handed over without a checkpoint
(suite.conformance.parallel.checkpoint). Each divergence has its place:
- right after loading, before any step: the checkpoint did not restore what was saved; the
  first tensor that differs names what (parameters, a non-persistent buffer, the optimizer's
  state, the learning rate or the scheduler's state);
- after resuming: training after the load differs although every tensor was restored: the
  random state (when it was not restored), or something outside the checkpoint.
Compared: parameters, gradients, every buffer, the optimizer's state and learning rates, at the
load and after every step, and the loss curve. Whether the wrapper itself equals one process
(per-rank BatchNorm statistics, dropout masks) is check_ddp_equivalence's question, not this one's.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from suite.cases.expect import expectation
from suite.conformance.closeness import mismatch
from suite.conformance.parallel.checkpoint import DcpCheckpoint, ResumePlan, resume_half
from suite.conformance.parallel.equivalence import Divergence, EquivalenceReport, build_report, make_job, resolve_group
from suite.conformance.result import meets, verdict_record

AFTER_LOAD, AFTER_RESUME = "right after loading", "after resuming"
OPTIMIZER_STATE, LR_SCHEDULE, PARAMETERS = ("optimizer_state_not_restored", "lr_schedule_not_restored",
                                            "parameters_not_restored")
NON_PERSISTENT_BUFFER, RNG_STATE = "non_persistent_buffer_not_restored", "rng_state_not_restored"
LOSS_CURVE, DIVERGES_AFTER_RESUME = "loss_curve", "diverges_after_resume"

# The first tensor that differs right after loading -> the cause it shows.
_RESTORED = {"optimizer state": OPTIMIZER_STATE, "learning rate": LR_SCHEDULE, "scheduler state": LR_SCHEDULE,
             "parameter": PARAMETERS, "buffer": PARAMETERS, "non-persistent buffer": NON_PERSISTENT_BUFFER}
_CAUSES = {
    OPTIMIZER_STATE: "the optimizer's state after loading is not the state saved (a fresh optimizer: momentum "
                     "and Adam's moments restart from zero, its step count from 0); save and load the optimizer "
                     "with the model (optimizer.state_dict(), or DCP's get_state_dict(model, optimizer))",
    LR_SCHEDULE: "the learning rate or the LR scheduler's state after loading is not the one saved: the "
                 "schedule restarts; put scheduler.state_dict() in the checkpoint and load it",
    PARAMETERS: "the parameters or buffers after loading are not those saved: the model's state dict did "
                "not round-trip",
    NON_PERSISTENT_BUFFER: "a buffer registered with persistent=False changes in training, and state_dict() "
                           "leaves it out, so no checkpoint of the state dict holds it; register it persistent, "
                           "or save it beside",
    RNG_STATE: "every tensor was restored, but not the random state, and the model draws random numbers "
               "(dropout): the masks after the resume are not the uninterrupted run's; save each rank's "
               "torch.get_rng_state() (and torch.cuda's) and set it on load",
    DIVERGES_AFTER_RESUME: "the state was restored, yet the steps after it differ: something outside the "
                           "checkpoint (data order, a setting, Python state of the model) changed at the resume",
    LOSS_CURVE: "every tensor agrees but the loss curve does not",
}


@dataclass
class ResumeReport:
    wrapper: str  # "ddp" or "fsdp"
    world_size: int  # ranks that saved
    resume_world_size: int  # ranks that loaded
    steps: int
    saved_at: int
    backend: str
    device: str
    checkpoint: str = "DCP"  # how the run was saved: DCP, or the user's save_fn by name
    phase: str = ""  # where the first divergence is: AFTER_LOAD, AFTER_RESUME
    divergence: Divergence | None = None
    reason: str | None = None  # a cause above
    losses: list[float] = field(default_factory=list)  # the run's loss per step: the ranks' mean
    reference_losses: list[float] = field(default_factory=list)  # the uninterrupted run's
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per category, from the load on
    detail: str = ""

    @property
    def verdict(self) -> str:
        return "fail" if self.reason else "pass"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def __str__(self) -> str:
        return self.detail


def check_resume(model_fn: Callable, inputs, targets, *, loss_fn: Callable, optimizer_fn: Callable | None = None,
                 scheduler_fn: Callable | None = None, wrapper: str = "ddp", world_size: int = 2,
                 resume_world_size: int | None = None, steps: int = 4, saved_at: int | None = None,
                 save_fn: Callable | None = None, load_fn: Callable | None = None,
                 ddp_kwargs: dict | None = None, fsdp_kwargs: dict | None = None, save_optimizer: bool = True,
                 save_scheduler: bool = True, device: str = "cpu", backend: str | None = None,
                 rtol: float | None = None, atol: float | None = None, timeout: float | None = None) -> ResumeReport:
    """Train model_fn() under DDP or FSDP2 (wrapper "fsdp") on `world_size` ranks for `saved_at`
    steps (default steps // 2), save, load into a fresh group of `resume_world_size` ranks
    (default the same) and train to `steps`; compare with the same run that never stopped, on
    the resumed ranks under the same wrapper.

    inputs/targets: the global batch, or one per step; it must split evenly over both world
    sizes. optimizer_fn: params -> optimizer (default plain SGD); scheduler_fn: optimizer -> LR
    scheduler, stepped after every step. save_fn(model, optimizer, scheduler, directory) and
    load_fn(the same): the user's checkpoint code, called on every rank with the wrapped model
    (DDP or FSDP2 module), its optimizer, its scheduler (or None) and a directory every rank
    sees; default: DCP with every rank's random state (checkpoint.DcpCheckpoint), where
    save_optimizer / save_scheduler False leave that state out (to see the check catch it).
    Module-level callables only: the workers import them. The report fails, naming the phase,
    step, rank and tensor (or the random state), when anything (parameters, buffers, gradients,
    optimizer state, learning rate, loss) leaves the tolerance (assert_close's for the dtype, or
    rtol/atol); it does not raise.
    """
    if wrapper not in ("ddp", "fsdp"):
        raise ValueError(f"wrapper is 'ddp' or 'fsdp', not {wrapper!r}")
    if (save_fn is None) != (load_fn is None):
        raise ValueError("give both save_fn and load_fn, or neither (the suite's DCP checkpoint)")
    resume_world_size = resume_world_size or world_size
    saved_at = steps // 2 if saved_at is None else saved_at
    if not 0 < saved_at < steps:
        raise ValueError(f"saved_at must be between 1 and steps - 1 = {steps - 1}, got {saved_at}")
    backend = resolve_group(backend, device, max(world_size, resume_world_size))
    jobs = [make_job(model_fn, inputs, targets, loss_fn=loss_fn, optimizer_fn=optimizer_fn, world_size=size,
                     steps=steps, ddp_kwargs=ddp_kwargs, device=device, scheduler_fn=scheduler_fn,
                     fsdp_kwargs=dict(fsdp_kwargs or {}) if wrapper == "fsdp" else None, rtol=rtol, atol=atol)
            for size in (world_size, resume_world_size)]  # validates the batch's split at both sizes
    if save_fn is None:
        dcp = DcpCheckpoint(world_size=world_size, optimizer=save_optimizer, scheduler=save_scheduler)
        save_fn, load_fn, how = dcp.save, dcp.load, "DCP"
    else:
        owner = getattr(save_fn, "__self__", None)  # a bound method: its object says what it saves (TorchSave)
        how = str(owner) if owner is not None else getattr(save_fn, "__qualname__", type(save_fn).__name__)
    with tempfile.TemporaryDirectory(prefix="torchsuite-resume-") as directory:
        plan = ResumePlan(path=directory, saved_at=saved_at, world_size=world_size, save_fn=save_fn, load_fn=load_fn)
        os.makedirs(plan.checkpoint_dir)
        first = _run(jobs[0], plan, world_size, backend, timeout)
        second = _run(jobs[1], replace(plan, loading=True), resume_world_size, backend, timeout)
    return build_resume_report(first, second, wrapper=wrapper, world_sizes=(world_size, resume_world_size),
                               steps=steps, saved_at=saved_at, backend=backend, device=device,
                               tolerance=(rtol, atol), checkpoint=how)


def _run(job, plan: ResumePlan, world_size: int, backend: str, timeout: float | None) -> list[dict]:
    from suite.distributed import get_pool

    return get_pool(world_size, backend, job.device).run(resume_half, job, plan, timeout=timeout)


def loss_curve(outcomes: Sequence[dict]) -> tuple[list[float], list[float]]:
    """(the run's loss per step, the mean of the ranks' shard losses; the uninterrupted run's)."""
    ours: dict[int, list[float]] = {}
    theirs: dict[int, list[float]] = {}
    for outcome in outcomes:
        for record in outcome["records"]:
            if "loss" in record:
                ours.setdefault(record["step"], []).append(record["loss"])
                theirs.setdefault(record["step"], []).append(record.get("reference_loss", record["loss"]))
    return ([sum(losses) / len(losses) for _, losses in sorted(ours.items())],
            [sum(losses) / len(losses) for _, losses in sorted(theirs.items())])


def build_resume_report(first: Sequence[dict], second: Sequence[dict], *, wrapper: str,
                        world_sizes: tuple[int, int], steps: int, saved_at: int, backend: str, device: str,
                        tolerance: tuple[float | None, float | None] = (None, None),
                        checkpoint: str = "DCP") -> ResumeReport:
    """The first divergence of the resumed run from the uninterrupted one, where it is and what it shows.
    `first`: the saving ranks' outcomes (their losses); `second`: the resumed ranks' comparisons."""
    after = build_report(second, world_size=world_sizes[1], steps=steps, backend=backend, device=device,
                         tolerance=tolerance)
    report = ResumeReport(wrapper=wrapper, world_size=world_sizes[0], resume_world_size=world_sizes[1],
                          steps=steps, saved_at=saved_at, backend=backend, device=device, checkpoint=checkpoint,
                          max_abs_diff=dict(after.max_abs_diff))
    before, resumed = loss_curve(first), loss_curve(second)
    report.losses, report.reference_losses = before[0] + resumed[0], before[1] + resumed[1]
    rng_differs = sorted({name for outcome in second for record in outcome["records"]
                          for name in record.get("rng_differs", ())})
    if after.divergence is not None:
        report.divergence = after.divergence
        # The only record at step saved_at is the comparison right after loading.
        if after.divergence.step == saved_at:
            report.phase, report.reason = AFTER_LOAD, _RESTORED[after.divergence.category]
        else:
            report.phase = AFTER_RESUME
            report.reason = RNG_STATE if rng_differs else DIVERGES_AFTER_RESUME
        explanation = f"{report.reason}: {_CAUSES[report.reason]}"
        if report.reason == RNG_STATE:
            explanation += f" (differs right after loading: the {' and '.join(rng_differs)} generator)"
    else:
        explanation = _loss_mismatch(report, after)
    run = (f"{'FSDP2' if wrapper == 'fsdp' else 'DDP'}, {saved_at} steps on {world_sizes[0]} ranks, saved with "
           f"{checkpoint}, loaded on {world_sizes[1]} ranks, {steps - saved_at} more ({backend}, {device})")
    maxima = ", ".join(f"{c} {d:.2g}" for c, d in sorted(report.max_abs_diff.items()))
    curve = " ".join(f"{loss:.4g}" for loss in report.losses)
    if report.reason is None:
        report.detail = (f"resumes as if uninterrupted: {run}; the loss curve {curve} and every tensor, at the "
                         f"load and after each step, within {after.tolerance} of the run that never stopped; "
                         f"max abs diff {maxima}")
    elif report.divergence is None:
        report.detail = f"diverges: {run}; {explanation}"
    else:
        report.detail = (f"diverges {report.phase}: {run}; first at {report.divergence} ({after.tolerance}); "
                         f"{explanation}")
    return report


def _loss_mismatch(report: ResumeReport, after: EquivalenceReport) -> str:
    """The loss curves agree: "". Else the report's reason is set and the mismatch explained."""
    ours, theirs = torch.tensor(report.losses), torch.tensor(report.reference_losses)
    if len(ours) != len(theirs):
        report.reason = LOSS_CURVE
        return f"{LOSS_CURVE}: {len(ours)} losses for {len(theirs)} steps"
    for step, (a, b) in enumerate(zip(ours, theirs), 1):
        why = mismatch(a, b, rtol=after.rtol, atol=after.atol)
        if why is not None:
            report.reason = LOSS_CURVE
            return f"{LOSS_CURVE}: at step {step} the loss is {a:.6g}, uninterrupted {b:.6g}; {_CAUSES[LOSS_CURVE]}"
    return ""


# -- the declared cases ------------------------------------------------------------------------

def check_case(case, device: str = "cpu", backend: str | None = None, timeout: float | None = None) -> ResumeReport:
    """Check one case of suite.cases.resume."""
    inputs, targets = case.data()
    return check_resume(case.model, inputs, targets, loss_fn=case.loss, optimizer_fn=case.optimizer,
                        scheduler_fn=case.scheduler, wrapper=case.wrapper, world_size=case.world_size,
                        resume_world_size=case.resume_world_size, steps=case.steps, saved_at=case.saved_at,
                        save_fn=case.checkpoint and case.checkpoint.save, load_fn=case.checkpoint and case.checkpoint.load,
                        save_optimizer=case.save_optimizer, save_scheduler=case.save_scheduler, device=device,
                        backend=backend, timeout=timeout)


def judge(case, report: ResumeReport) -> tuple[bool, str]:
    """Whether the report is what the case expects, and a one-line detail saying so."""
    expected = expectation(case.expect, "resume")
    ok = meets(expected, failed=report.verdict == "fail", cause=report.reason)
    expecting = "expected to resume exactly" if expected is None else f"expected to fail: {expected.cause}"
    return ok, f"{'as' if ok else 'NOT as'} {expecting}: {report.detail}"


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """One verdict per resume case (quick: the cases marked quick), on the shared pools."""
    from suite.cases.resume import CASES
    from suite.devices import cuda_count
    from suite.errors import SuiteError

    gpus = cuda_count() if device == "cuda" else 0
    for case in CASES:
        if quick and not case.quick:
            continue
        if device == "cuda" and gpus < max(case.world_size, case.resume_world_size):
            continue  # gloo over one GPU would do, but the GPU run is about NCCL: not enough GPUs
        start = time.perf_counter()
        try:
            passed, detail = judge(case, check_case(case, device=device))
        except SuiteError as error:
            passed, detail = False, f"error: {error}"
        yield verdict_record(case.wrapper, case.name, "resume", device=device, passed=passed, detail=detail,
                             seconds=time.perf_counter() - start)
