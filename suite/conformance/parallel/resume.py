"""Checkpoints that resume: a run saved with torch.distributed.checkpoint (DCP) and resumed, on the
same or another world size, must train as one that never stopped.

`check_resume` trains `saved_at` steps in one group, saves the model, the optimizer and the LR
scheduler with DCP, loads them into a fresh group (another pool, when the world size changes)
and trains the remaining steps. Both halves run the shared rank loop
(ddp_training.train_beside_reference) beside the uninterrupted run: the whole-batch single
process, which the data-parallel promise says every rank equals, trained from the first
half's starting state and never saved nor loaded. So one reference serves every world size,
and each divergence has its place:
- before the save: data parallelism itself (the equivalence checks' causes);
- right after loading, before any step: the checkpoint did not restore what was saved; the
  first tensor that differs names what (parameters, optimizer state, the learning rate);
- after resuming: training after the load differs although the state was restored.
Compared: parameters, gradients, buffers, the optimizer's state and learning rates, at the
load and after every step, and the loss curve (the ranks' mean shard loss against the
reference's whole-batch loss).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from suite.cases.expect import expectation
from suite.conformance.closeness import mismatch
from suite.conformance.parallel.checkpoint import ResumePlan
from suite.conformance.parallel.equivalence import (Divergence, EquivalenceReport, build_report, make_job,
                                                    rank_loop, resolve_group)
from suite.conformance.result import meets, verdict_record

BEFORE_SAVE, AFTER_LOAD, AFTER_RESUME = "before the save", "right after loading", "after resuming"
OPTIMIZER_STATE, LR_SCHEDULE, PARAMETERS = ("optimizer_state_not_restored", "lr_schedule_not_restored",
                                            "parameters_not_restored")
LOSS_CURVE, DIVERGES_AFTER_RESUME = "loss_curve", "diverges_after_resume"

# The first tensor that differs right after loading -> the cause it shows.
_RESTORED = {"optimizer state": OPTIMIZER_STATE, "learning rate": LR_SCHEDULE, "scheduler state": LR_SCHEDULE,
             "parameter": PARAMETERS, "buffer": PARAMETERS}
_CAUSES = {
    OPTIMIZER_STATE: "the optimizer's state after loading is not the state saved (a fresh optimizer: momentum "
                     "and Adam's moments restart from zero, its step count from 0); save and load the optimizer "
                     "with the model, as get_state_dict(model, optimizer) and set_state_dict give them",
    LR_SCHEDULE: "the learning rate or the LR scheduler's state after loading is not the one saved: the "
                 "schedule restarts; put scheduler.state_dict() in the checkpoint and load it",
    PARAMETERS: "the parameters or buffers after loading are not those saved: the model's state dict did "
                "not round-trip (get_model_state_dict / set_model_state_dict)",
    DIVERGES_AFTER_RESUME: "the state was restored, yet the steps after it differ: something outside the "
                           "checkpoint (data order, random state, a setting) changed at the resume",
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
    phase: str = ""  # where the first divergence is: BEFORE_SAVE, AFTER_LOAD, AFTER_RESUME
    divergence: Divergence | None = None
    reason: str | None = None  # a cause above, or the equivalence check's before the save
    losses: list[float] = field(default_factory=list)  # the run's loss per step: the ranks' mean
    reference_losses: list[float] = field(default_factory=list)  # the uninterrupted run's
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per category, both halves
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
                 ddp_kwargs: dict | None = None, fsdp_kwargs: dict | None = None, save_optimizer: bool = True,
                 save_scheduler: bool = True, device: str = "cpu", backend: str | None = None,
                 rtol: float | None = None, atol: float | None = None, timeout: float | None = None) -> ResumeReport:
    """Train model_fn() under DDP or FSDP2 (wrapper "fsdp") on `world_size` ranks for `saved_at`
    steps (default steps // 2), save with DCP, load into a fresh group of `resume_world_size`
    ranks (default the same) and train to `steps`; compare with a run that never stopped.

    inputs/targets: the global batch, or one per step; it must split evenly over both world
    sizes. optimizer_fn: params -> optimizer (default plain SGD); scheduler_fn: optimizer -> LR
    scheduler, stepped after every step. save_optimizer / save_scheduler False leave that state
    out of the checkpoint (to see the check catch it). Module-level callables only: the workers
    import them. The report fails, naming the phase, step, rank and tensor, when anything
    (parameters, gradients, optimizer state, learning rate, loss) leaves the tolerance
    (assert_close's for the dtype, or rtol/atol); it does not raise.
    """
    if wrapper not in ("ddp", "fsdp"):
        raise ValueError(f"wrapper is 'ddp' or 'fsdp', not {wrapper!r}")
    resume_world_size = resume_world_size or world_size
    saved_at = steps // 2 if saved_at is None else saved_at
    if not 0 < saved_at < steps:
        raise ValueError(f"saved_at must be between 1 and steps - 1 = {steps - 1}, got {saved_at}")
    backend = resolve_group(backend, device, max(world_size, resume_world_size))
    jobs = [make_job(model_fn, inputs, targets, loss_fn=loss_fn, optimizer_fn=optimizer_fn, world_size=size,
                     steps=steps, ddp_kwargs=ddp_kwargs, device=device, scheduler_fn=scheduler_fn,
                     fsdp_kwargs=dict(fsdp_kwargs or {}) if wrapper == "fsdp" else None, rtol=rtol, atol=atol)
            for size in (world_size, resume_world_size)]  # validates the batch's split at both sizes
    with tempfile.TemporaryDirectory(prefix="torchsuite-dcp-") as directory:
        plan = ResumePlan(path=directory, saved_at=saved_at, optimizer=save_optimizer, scheduler=save_scheduler)
        first = _run(replace(jobs[0], resume=plan), world_size, backend, timeout)
        loading = replace(plan, loading=True, reference_start=first[0]["reference_start"])
        second = _run(replace(jobs[1], resume=loading), resume_world_size, backend, timeout)
    return build_resume_report(first, second, wrapper=wrapper, world_sizes=(world_size, resume_world_size),
                               steps=steps, saved_at=saved_at, backend=backend, device=device,
                               tolerance=(rtol, atol))


def _run(job, world_size: int, backend: str, timeout: float | None) -> list[dict]:
    from suite.distributed import get_pool

    return get_pool(world_size, backend, job.device).run(rank_loop(job), job, timeout=timeout)


def loss_curve(outcomes: Sequence[dict]) -> tuple[list[float], list[float]]:
    """(the run's loss per step, the mean of the ranks' shard losses; the reference's)."""
    by_step: dict[int, list[float]] = {}
    for outcome in outcomes:
        for record in outcome["records"]:
            if "loss" in record:
                by_step.setdefault(record["step"], []).append(record["loss"])
    reference = [r["reference_loss"] for r in outcomes[0]["records"] if "reference_loss" in r]
    return [sum(losses) / len(losses) for _, losses in sorted(by_step.items())], reference


def build_resume_report(first: Sequence[dict], second: Sequence[dict], *, wrapper: str,
                        world_sizes: tuple[int, int], steps: int, saved_at: int, backend: str, device: str,
                        tolerance: tuple[float | None, float | None] = (None, None)) -> ResumeReport:
    """Merge both halves' comparisons: the first divergence, where it is and what it shows."""
    halves = [build_report(outcomes, world_size=size, steps=count, backend=backend, device=device,
                           tolerance=tolerance)
              for outcomes, size, count in ((first, world_sizes[0], saved_at), (second, world_sizes[1], steps))]
    report = ResumeReport(wrapper=wrapper, world_size=world_sizes[0], resume_world_size=world_sizes[1],
                          steps=steps, saved_at=saved_at, backend=backend, device=device)
    for half in halves:
        for category, diff in half.max_abs_diff.items():
            report.max_abs_diff[category] = max(report.max_abs_diff.get(category, 0.0), diff)
    curves = [loss_curve(first), loss_curve(second)]
    report.losses = curves[0][0] + curves[1][0]
    report.reference_losses = curves[0][1] + curves[1][1]
    before, after = halves
    if before.divergence is not None:
        report.phase, report.divergence, report.reason = BEFORE_SAVE, before.divergence, before.reason
        explanation = before.detail.split("; ", 1)[-1]
    elif after.divergence is not None:
        report.divergence = after.divergence
        # The only record of the second half at step saved_at is the comparison right after loading.
        if after.divergence.step == saved_at:
            report.phase, report.reason = AFTER_LOAD, _RESTORED[after.divergence.category]
        else:
            report.phase, report.reason = AFTER_RESUME, DIVERGES_AFTER_RESUME
        explanation = f"{report.reason}: {_CAUSES[report.reason]}"
    else:
        explanation = _loss_mismatch(report, after)
    run = (f"{'FSDP2' if wrapper == 'fsdp' else 'DDP'}, {saved_at} steps on {world_sizes[0]} ranks, saved with DCP, "
           f"loaded on {world_sizes[1]} ranks, {steps - saved_at} more ({backend}, {device})")
    maxima = ", ".join(f"{c} {d:.2g}" for c, d in sorted(report.max_abs_diff.items()))
    curve = " ".join(f"{loss:.4g}" for loss in report.losses)
    if report.reason is None:
        report.detail = (f"resumes as if uninterrupted: {run}; the loss curve {curve} and every tensor, at the "
                         f"load and after each step, within {after.tolerance}; max abs diff {maxima}")
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
