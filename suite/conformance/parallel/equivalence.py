"""Data-parallel equivalence: N ranks on N shards must train exactly as one process on the whole batch.

The article's P(x) = 1/N sum_i f_i(x): DDP averages the ranks' gradients, and FSDP2 averages
them too while each rank keeps a shard of the parameters, so with a mean loss every step
equals the whole-batch step up to float rounding. `check_ddp_equivalence` and
`check_fsdp_equivalence` train in a shared worker pool beside a whole-batch reference and
report the first step, tensor and size of any divergence, naming the cause when it is a known
one. The rank loops are ddp_training.py and fsdp.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from suite.cases.expect import APPROXIMATE, NOT_COMPILED, expectation
from suite.conformance.parallel.sharding import Sharding
from suite.conformance.result import meets, verdict_record
from suite.conformance.closeness import tolerances
from suite.conformance.parallel.ddp_training import TrainingJob, train_and_compare
from suite.conformance.parallel.fsdp import fsdp_train_and_compare, plan_for_job
from suite.devices import default_backend, require_device

SUM_LOSS, BATCHNORM, DROPOUT, UNEXPLAINED = "sum_loss", "batchnorm", "dropout", "unexplained"
COMPRESSION, MIXED_PRECISION, SHARDING, COMPILER = "compression", "mixed_precision", "sharding", "compiler"

_CAUSES = {
    SUM_LOSS: "the gradients are exactly 1/{n} of the reference's: the loss sums over its batch "
              "and DDP averages over {n} ranks; multiply each rank's loss by {n}, or use a mean",
    BATCHNORM: "BatchNorm normalises each rank's shard with that shard's batch statistics, not "
               "the whole batch's (broadcast_buffers then copies rank 0's running statistics); "
               "use SyncBatchNorm",
    DROPOUT: "dropout draws its masks on each rank, so the ranks drop other units than the "
             "whole-batch reference does; compare with dropout off",
    COMPRESSION: "the communication hook compresses every gradient (16-bit rounding, or a low-rank "
                 "approximation) before it is averaged; judge it at a tolerance derived from that",
    MIXED_PRECISION: "the mixed-precision policy ({policy}) computes or reduces below float32; compare "
                     "with a reference run at the same precision (reference_dtype, for param_dtype), or at a "
                     "tolerance derived from it",
    SHARDING: "a parameter is used outside the module sharded with it, where it is a sharded DTensor; "
              "shard it with all its users (their common ancestor)",
    COMPILER: "each rank's module runs under torch.compile({backend}), the reference eagerly, and nothing else "
              "explains the difference: the compiled program computes otherwise; check_compile it in one process",
    UNEXPLAINED: "no known cause (sum loss, BatchNorm, dropout, compression, mixed precision, compiler) explains it",
}


@dataclass(frozen=True)
class Divergence:
    step: int  # 1-based
    rank: int
    category: str  # gradient, buffer or parameter
    tensor: str
    max_abs_diff: float

    def __str__(self) -> str:
        return (f"step {self.step}, rank {self.rank}, {self.category} {self.tensor}: "
                f"max abs diff {self.max_abs_diff:.3g}")


@dataclass
class EquivalenceReport:
    world_size: int
    steps: int
    backend: str
    device: str
    rtol: float
    atol: float
    divergence: Divergence | None = None
    reason: str | None = None  # a known cause (SUM_LOSS, BATCHNORM, DROPOUT) or UNEXPLAINED
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per category, all steps and ranks
    detail: str = ""
    compiled_graphs: int | None = None  # with compile_backend: the graphs dynamo compiled on rank 0
    tolerance: str = ""  # the tolerances the comparisons used, as the detail prints them

    @property
    def verdict(self) -> str:
        """"fail" (a divergence), "not_compiled" (compile_backend's backend received no graph, so
        the ranks trained eagerly: equal, but the compiled run was not checked) or "pass"."""
        if self.divergence is not None or self.reason is not None:
            return "fail"
        return NOT_COMPILED if self.compiled_graphs == 0 else "pass"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def __str__(self) -> str:
        return self.detail


def sgd(params) -> torch.optim.Optimizer:
    """The default optimizer: plain SGD, so a divergence is not blurred by optimizer state."""
    return torch.optim.SGD(params, lr=0.05)


def resolve_group(backend: str | None, device: str, world_size: int) -> str:
    """The backend to use; DeviceUnavailableError when the device (count) is absent."""
    backend = backend or default_backend(device)
    # NCCL drives one GPU per rank; gloo over CUDA tensors may share one GPU between ranks.
    require_device(device, world_size if backend == "nccl" else 1)
    return backend


def _as_steps(tensors) -> tuple:
    return (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)


def check_ddp_equivalence(model_fn: Callable, inputs, targets, *, loss_fn: Callable,
                          optimizer_fn: Callable | None = None, world_size: int = 2,
                          steps: int = 3, ddp_kwargs: dict | None = None,
                          backend: str | None = None, device: str = "cpu",
                          accumulate: int = 1, scheme: str = "shards", loss_scale: float = 1.0,
                          comm_hook: str = "", rtol: float | None = None, atol: float | None = None,
                          compile_backend: str | None = None, timeout: float | None = None) -> EquivalenceReport:
    """Train model_fn() with DDP on `world_size` ranks and compare every step with one process.

    inputs/targets: the global batch, used at every step, or a sequence of one per step.
    The batch is split into world_size contiguous equal shards, rank r taking shard r; the
    reference trains on the whole batch from rank 0's initial state. After every step the
    parameters, gradients and buffers of every rank must be close to the reference's
    (torch.testing.assert_close's tolerances for the dtype; float32: rtol 1.3e-6, atol 1e-5).
    model_fn, loss_fn and optimizer_fn (params -> optimizer; default `sgd`) must be
    module-level so the workers can import them.

    accumulate > 1 splits each shard into micro-batches, all but the last under no_sync()
    (the loss must be a mean). scheme "uneven": rank r stops after steps - r steps, inside a
    Join context; "sampler": inputs is a data set that DistributedSampler shares out at every
    step. loss_scale multiplies each rank's loss (world_size turns a sum loss into DDP's).
    comm_hook names a DDP communication hook ("allreduce", "fp16_compress", "bf16_compress",
    "powersgd"); rtol/atol replace the dtype's tolerances (a hook that rounds needs its own).
    compile_backend runs each rank's DDP module under torch.compile with that backend (dynamo's
    DDPOptimizer splits its graph at the buckets); the reference stays eager.

    A model that diverges gives a report with passed False; it does not raise. An absent
    device raises DeviceUnavailableError; a failed worker raises WorkerError.
    """
    backend = resolve_group(backend, device, world_size)
    job = make_job(model_fn, inputs, targets, loss_fn=loss_fn, optimizer_fn=optimizer_fn,
                   world_size=world_size, steps=steps, ddp_kwargs=ddp_kwargs, device=device,
                   accumulate=accumulate, scheme=scheme, loss_scale=loss_scale, comm_hook=comm_hook,
                   compile_backend=compile_backend, rtol=rtol, atol=atol)
    return run_job(job, world_size, backend, timeout)


def check_fsdp_equivalence(model_fn: Callable, inputs, targets, *, loss_fn: Callable,
                           optimizer_fn: Callable | None = None, world_size: int = 2,
                           steps: int = 3, fsdp_kwargs: dict | None = None, device: str = "cpu",
                           accumulate: int = 1, loss_scale: float = 1.0,
                           reference_dtype: torch.dtype | None = None, rtol: float | None = None,
                           atol: float | None = None, backend: str | None = None,
                           shard_modules: Sequence[str] | None = None,
                           timeout: float | None = None) -> EquivalenceReport:
    """Train model_fn() under FSDP2 (`fully_shard`) on `world_size` ranks and compare every
    step with one process on the whole batch; the report has check_ddp_equivalence's shape.

    fsdp_kwargs go to every fully_shard call (reshard_after_forward, mp_policy, ...). Each
    submodule holding parameters is sharded, then the root; tied weights stay in one group,
    their common parent (suite.conformance.parallel.fsdp). The reference starts from the full
    tensors of what FSDP shards, whatever each rank built, and after every step the full
    parameters, gradients and buffers must be close to its own. accumulate > 1: micro-batches
    with gradient sync only on the last. reference_dtype runs the reference's forward in that
    precision (to judge a bf16 mp_policy against a bf16 reference rather than a float32 one).

    A parameter that a module's forward uses from outside the module holding it (a hand-tied
    head, `F.linear(h, self.proj.weight.t())` in the parent) is sharded with all its users, as
    one forward of the model shows them. shard_modules: the submodules to fully_shard (by name)
    instead of the checker's choice; one that leaves such a parameter sharded away from a user
    gives a failing report (reason "sharding") naming the parameter and the fix.
    """
    backend = resolve_group(backend, device, world_size)
    job = make_job(model_fn, inputs, targets, loss_fn=loss_fn, optimizer_fn=optimizer_fn,
                   world_size=world_size, steps=steps, device=device, accumulate=accumulate,
                   loss_scale=loss_scale, fsdp_kwargs=fsdp_kwargs or {},
                   reference_dtype=reference_dtype, rtol=rtol, atol=atol, shard_modules=shard_modules)
    return run_job(job, world_size, backend, timeout)


def make_job(model_fn, inputs, targets, *, loss_fn, optimizer_fn=None, world_size: int,
             steps: int, ddp_kwargs=None, device="cpu", accumulate=1, scheme="shards",
             loss_scale=1.0, shard_modules: Sequence[str] | None = None, **options) -> TrainingJob:
    """A validated TrainingJob: shapes that split as the scheme needs, one target per input.
    `options`: TrainingJob's other fields (comm_hook, fsdp_kwargs, reference_dtype, rtol, atol).
    FSDP2: the sharding is planned here, once (fsdp.plan_sharding), from `shard_modules` if given."""
    job = TrainingJob(model_fn=model_fn, loss_fn=loss_fn, optimizer_fn=optimizer_fn or sgd,
                      inputs=_as_steps(inputs), targets=_as_steps(targets), steps=steps,
                      ddp_kwargs=dict(ddp_kwargs or {}), device=device,
                      sharding=Sharding(scheme, accumulate), loss_scale=loss_scale, **options)
    for x, y in zip(job.inputs, job.targets):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} targets")
        job.sharding.validate(len(x), world_size)
    if job.fsdp_kwargs is not None:
        plan = plan_for_job(model_fn, job.inputs[0][:2],
                            None if shard_modules is None else tuple(shard_modules))
        job = replace(job, shard_groups=plan.groups, sharding_problem=plan.problem)
    return job


def run_job(job: TrainingJob, world_size: int, backend: str, timeout: float | None = None
            ) -> EquivalenceReport:
    """Run a job on the shared pool for (world_size, backend, device) and merge its report."""
    from suite.distributed import get_pool

    outcomes = get_pool(world_size, backend, job.device).run(rank_loop(job), job, timeout=timeout)
    return build_report(outcomes, world_size=world_size, steps=job.steps, backend=backend,
                        device=job.device, tolerance=(job.rtol, job.atol))


def rank_loop(job: TrainingJob):
    """What each rank runs for `job`: FSDP2's loop when the job shards, else DDP's."""
    return fsdp_train_and_compare if job.fsdp_kwargs is not None else train_and_compare


def _tolerances_used(outcomes: Sequence[dict], declared: tuple[float | None, float | None]
                     ) -> tuple[float, float, str]:
    """(rtol, atol, text) of the comparisons: the declared pair, else assert_close's for the dtypes
    of the tensors compared (the parameters', not the inputs': token ids are integers). Several
    dtypes: each is named, and rtol/atol are the loosest."""
    if None not in declared:
        return *declared, f"rtol {declared[0]:g}, atol {declared[1]:g}, declared"
    dtypes = sorted({d for outcome in outcomes for record in outcome["records"] for d in record.get("dtypes", ())})
    used = {d: tolerances(getattr(torch, d)) for d in dtypes} or {"float32": tolerances(torch.float32)}
    rtol, atol = max(used.values())
    return rtol, atol, "; ".join(f"{d} rtol {r:g}, atol {a:g}" for d, (r, a) in used.items())


def build_report(outcomes: Sequence[dict], *, world_size: int, steps: int, backend: str, device: str,
                 tolerance: tuple[float | None, float | None] = (None, None)) -> EquivalenceReport:
    """Merge the ranks' comparisons: the earliest divergence (by step, then rank) and its cause."""
    rtol, atol, tolerance = _tolerances_used(outcomes, tolerance)
    report = EquivalenceReport(world_size=world_size, steps=steps, backend=backend, device=device, rtol=rtol,
                               atol=atol, compiled_graphs=outcomes[0].get("compiled_graphs"), tolerance=tolerance)
    problem = outcomes[0].get("sharding_problem")
    if problem:  # nothing was trained: the sharding cannot work
        report.reason = SHARDING
        report.detail = f"cannot shard ({SHARDING}): {problem}"
        return report
    first = None
    for outcome in outcomes:
        for record in outcome["records"]:
            for category, diff in record["max"].items():
                report.max_abs_diff[category] = max(report.max_abs_diff.get(category, 0.0), diff)
            if record["first"] and (first is None or record["step"] < first[0].step):
                first = (Divergence(record["step"], outcome["rank"], *record["first"]), record,
                         outcome["traits"])
    if first is None:
        maxima = ", ".join(f"{c} {d:.2g}" for c, d in sorted(report.max_abs_diff.items()))
        trained = f"{steps} steps on {world_size} ranks ({backend}, {device}); max abs diff {maxima or 'none'} ({tolerance})"
        if report.verdict == NOT_COMPILED:
            report.detail = (f"not compiled: {outcomes[0].get('not_compiled', 'the backend received no graph')}; "
                             f"the ranks ran {outcomes[0]['traits'].get('wrapper', 'DDP')} eagerly, equal to one process: "
                             f"{trained}")
        else:
            compiled = f"; compiled into {report.compiled_graphs} graph(s)" if report.compiled_graphs is not None else ""
            report.detail = f"equivalent: {trained}{compiled}"
        return report
    divergence, record, traits = first
    report.divergence = divergence
    report.reason = _cause(record, traits)
    report.detail = (f"diverges at {divergence} ({tolerance}); {report.reason}: "
                     + _CAUSES[report.reason].format(n=world_size, policy=traits.get("mixed_precision"),
                                                     backend=traits.get("compiled")))
    return report


def _cause(record: dict, traits: dict) -> str:
    if record.get("grads_scaled_by_world_size"):
        return SUM_LOSS
    if traits.get("compression"):
        return COMPRESSION
    if traits.get("mixed_precision"):
        return MIXED_PRECISION
    if traits.get("batchnorm"):
        return BATCHNORM
    if traits.get("dropout"):
        return DROPOUT
    if traits.get("compiled"):
        return COMPILER
    return UNEXPLAINED


# -- the declared cases ------------------------------------------------------------------------

def check_case(case, device: str = "cpu", backend: str | None = None,
               world_size: int | None = None, timeout: float | None = None) -> EquivalenceReport:
    """Check one case of suite.cases.parallel (at its own world size unless one is given)."""
    world_size = world_size or case.world_size
    backend = resolve_group(backend, device, world_size)
    return run_job(case_job(case, world_size, device), world_size, backend, timeout)


def case_job(case, world_size: int, device: str = "cpu") -> TrainingJob:
    """The TrainingJob of a declared case at `world_size` ranks."""
    inputs, targets = case.data(world_size)
    return make_job(case.model, inputs, targets, loss_fn=case.loss, optimizer_fn=case.optimizer,
                    world_size=world_size, steps=case.steps, ddp_kwargs=case.ddp_kwargs,
                    device=device, accumulate=case.accumulate, scheme=case.scheme,
                    loss_scale=world_size if case.rescale_loss else 1.0, comm_hook=case.comm_hook,
                    compile_backend=case.compile_backend, fsdp_kwargs=case.fsdp_kwargs, reference_dtype=case.reference_dtype,
                    rtol=case.rtol, atol=case.atol, shard_modules=case.shard_modules)


def judge(case, report: EquivalenceReport) -> tuple[bool, str]:
    """Whether the report is what the case expects (suite.cases.expect), and a one-line detail saying so."""
    expected = expectation(case.expect, "equivalence")
    if expected is not None and expected.outcome == APPROXIMATE:  # the error is the finding, not a verdict
        maxima = ", ".join(f"{c} {d:.2g}" for c, d in sorted(report.max_abs_diff.items()))
        return True, f"approximate by design, max abs diff from the reference: {maxima}"
    ok = meets(expected, failed=report.verdict == "fail", cause=report.reason,
               not_compiled=report.verdict == NOT_COMPILED)
    expectation_ = ("expected equivalent" if expected is None else f"expected not compiled ({expected.why})"
                    if expected.outcome == NOT_COMPILED else f"expected to diverge from {expected.cause}")
    return ok, f"{'as' if ok else 'NOT as'} {expectation_}: {report.detail}"


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """One conformance verdict per parallel case (quick: the cases marked quick, 2 ranks)."""
    from suite.cases.parallel import CASES
    from suite.devices import cuda_count
    from suite.distributed.pool import close_shared_pools
    from suite.errors import SuiteError

    # By world size, each size's pools closed before the next size's start: one group's
    # processes alive at a time, not every size's at once.
    gpus = cuda_count() if device == "cuda" else 0
    cases = sorted((c for c in CASES if (c.quick or not quick) and c.devices_needed <= gpus),
                   key=lambda c: c.world_size)
    for previous, case in zip([None, *cases], cases):
        if previous is not None and previous.world_size != case.world_size:
            close_shared_pools()
        # gloo where there are fewer GPUs than ranks: it may put several ranks on one GPU.
        backend = default_backend(device) if device == "cpu" or cuda_count() >= case.world_size else "gloo"
        start = time.perf_counter()
        try:
            passed, detail = judge(case, check_case(case, device=device, backend=backend))
        except SuiteError as error:
            passed, detail = False, f"error: {error}"
        yield verdict_record(case.wrapper, case.name, "equivalence", device=device, passed=passed, detail=detail,
                             seconds=time.perf_counter() - start)
