"""`torchsuite run`: every conformance check and every timing on this machine's devices, into one results file.

The plan is made before anything runs (so the progress bar knows its length and a bad model
name or absent device fails before any work). Each step's records are saved as they arrive;
a step that raises becomes an error record, so one broken checker does not cost the run.

Every step that runs kernels runs outside this process: the timings in their fresh processes
(suite.timing.processes), and the conformance checks, limits and convergence runs as tasks of one
worker process (suite.isolation), started at the first and again only after a crash; on two cores
or more a second worker runs a conformance source beside the first's (execute). A kernel
that kills its process or hangs is a record (`crash`, `timeout`) naming its case, and the run goes
on from the next case; the calibrations alone run here, before anything else.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from suite.errors import SuiteError, one_line
from suite.isolation import LOST, IsolatedWorker, WorkerCrash
from suite.progress import Progress
from suite.results import ResultsStore
from suite.threads import usable_cores
from suite.timing.worker import PEAKS_ENV

if TYPE_CHECKING:
    from suite.conformance.sources import VerdictSource

PEAK_MODEL_DTYPE = "float32"


@dataclass(frozen=True)
class TimingApi:
    """What the run needs from suite.timing; a parameter so tests can stand in for it."""

    open_worker: Callable[[list[dict]], object]  # requests in order -> a worker: result(i), close()
    calibrate: Callable[[str, bool], dict]  # (device, quick) -> the peak the device's timings are divided by
    iter_setups: Callable[..., Iterable]  # (devices, quick, models) -> cases with model, mode, kwargs, skip_reason
    attach_scaling_efficiency: Callable[[list[dict]], object] = lambda records: records
    processes: Callable[[bool], int] | None = None  # (quick) -> fresh processes a figure; None: the suite's
    # (limit name, device, quick) -> `limit` records (suite.timing.limits); None: no limits step
    measure_limit: Callable[[str, str, bool], Iterable[dict]] | None = None


def _processes_for(api: TimingApi, quick: bool) -> int:
    from suite.timing.processes import processes_for

    return (api.processes or processes_for)(quick)


def default_timing_api() -> TimingApi:
    from suite.timing import plan, processes
    from suite.timing.limits import measure_limit
    from suite.timing.peak import calibrate_peak, peak_dtype_for

    def calibrate(device: str, quick: bool) -> dict:
        # The calibration time_model itself will use (same dtype rule, same cache key), measured up front.
        return calibrate_peak(device, peak_dtype_for(device, PEAK_MODEL_DTYPE), quick=quick)

    return TimingApi(processes.WorkerProcess, calibrate, plan.iter_setups, plan.attach_scaling_efficiency,
                     measure_limit=measure_limit)


@dataclass(frozen=True)
class PlanStep:
    kind: str  # "calibration", "limits", "conformance", "timing" or "skip": the progress estimate groups by it
    label: str
    produce: Callable[[], Iterable[dict]]
    context: dict  # what an error record says the step was
    estimate_s: float  # for --dry-run: a typical duration on a small machine, not a promise
    # The worker pools it uses (suite.distributed.pool), or None. Consecutive steps with one key
    # share the pools; when the key changes they are closed, so that a run over many world
    # sizes never has more than one part's processes alive.
    pool_key: tuple | None = None
    # ("module:function", JSON arguments): what `produce` calls, for the run's worker process
    # (suite.isolation) to call instead; None: the step runs here (a test's stand-in).
    task: tuple[str, tuple] | None = None

    @property
    def uses_worker_pool(self) -> bool:
        return self.pool_key is not None


def _task(function: Callable, *args) -> tuple[str, tuple] | None:
    """`function` as a worker's task, when it is the suite's own (a test's stand-in runs here)."""
    if not function.__module__.startswith("suite.") or "<locals>" in function.__qualname__:
        return None
    return f"{function.__module__}:{function.__qualname__}", args


def source_records(source: str, device: str, quick: bool) -> Iterable[dict]:
    """A conformance source's records ("module:qualname" of its verdicts function): a worker's task."""
    from suite.isolation import resolve

    return _verdict_records(resolve(source), device, quick)


def _verdict_records(verdicts: Callable, device: str, quick: bool) -> Iterable[dict]:
    from suite.timing.settings import preserved_settings

    # A check may switch TF32 off or make kernels deterministic: none of it may reach a timing.
    with preserved_settings():
        for verdict in verdicts(device, quick):
            yield {"kind": "conformance", "device": device, **verdict}


# --dry-run estimates
TIMING_OVERHEAD_S = 1.5  # building the model, warm-up, canaries, counting FLOPs
POOL_START_S = 2.0
# A compiled figure compiles twice in its first process (docs/compile.md, 2 cores): cold, 2.0 to 7.2 s
# an article model, and warm, about 0.1 s; in each later process once, over the cache the first
# left (suite.timing.compiled), 0.3 s. A process's first compile also pays inductor's imports and
# set-up, about 8 s. Inductor's check of the CPU's vector instructions (a compiler and a fresh
# interpreter a set, 12 s cold) is paid once, before the first timing (suite.vec_isa).
COMPILE_S, COMPILE_WARM_S = 5.0, 0.3
INDUCTOR_START_S, VEC_ISA_PROBE_S = 8.0, 12.0


def _conformance_step(source: VerdictSource, device: str, quick: bool) -> PlanStep:
    return PlanStep("conformance", f"conformance {source.name} on {device}",
                lambda: _verdict_records(source.verdicts, device, quick),
                {"stage": "conformance", "source": source.name, "device": device},
                source.estimated_s[0 if quick else 1],
                pool_key=("conformance", device) if source.uses_worker_pool else None,
                task=(f"{__name__}:source_records", (source.name, device, quick))
                if _task(source.verdicts) else None)


class _Figures:
    """The processes' records of every figure so far, and each figure's record merged from them."""

    def __init__(self):
        self.records: dict[str, list[dict]] = {}
        self.errors: dict[str, list[str]] = {}

    def merged(self, figure: str | None = None) -> list[dict]:
        from suite.timing.processes import merge_figures

        records = [{**record, "figure": name, "process_errors": self.errors.get(name, [])}
                   for name, record in merge_figures(self.records).items()]
        return [r for r in records if figure is None or r["figure"] == figure]


class _Round:
    """One fresh worker process timing every figure of a round in order, started at its first
    step; a worker lost to a crash or hang is replaced by a fresh one for the figures after."""

    def __init__(self, open_worker: Callable, requests: list[dict], round_index: int = 0):
        self.open_worker, self.requests, self.round_index, self.worker = open_worker, requests, round_index, None
        self.first = 0  # the current worker's first request

    def result(self, index: int) -> dict:
        if self.worker is None:
            self.first = index
            self.worker = self.open_worker(self.requests[index:])
        try:
            return self.worker.result(index - self.first)
        except Exception:
            if getattr(self.worker, "failure", None) is not None:  # lost: the next figure gets a fresh one
                self.worker = None
            raise
        finally:
            if index == len(self.requests) - 1 and self.worker is not None:
                self.worker.close()


def _timing_steps(api: TimingApi, cases: list, quick: bool) -> list[PlanStep]:
    """Skips for absent hardware, then every figure once a round in fresh processes
    (suite.timing.processes), then one step that gives each figure its final interval."""
    from suite.timing.processes import INTERPRETER_START_S, WorkerError, compile_once, round_order
    from suite.timing.setups import COMPILE_SETUPS

    steps = []
    for case in cases:
        if case.skip_reason:
            context = {"stage": "timing", "model": case.model, "mode": case.mode, **case.kwargs}
            steps.append(PlanStep("skip", f"timing {case.id}", lambda c=context, r=case.skip_reason: iter(
                [{"kind": "skipped", **c, "reason": r}]), context, 0.0))
    count = _processes_for(api, quick)
    # With several processes a figure's precision is theirs: each samples a fixed amount.
    requests = [{"figure": c.id, "model": c.model, "mode": c.mode,
                 "kwargs": {**c.kwargs, **({"seek_precision": False} if count > 1 else {})}}
                for c in cases if not c.skip_reason]
    if not requests:
        return steps
    figures = _Figures()
    pool_setups = _pool_setups()

    def produce(this_round: _Round, index: int, figure: str, context: dict):
        try:
            figures.records.setdefault(figure, []).append(this_round.result(index))
        except WorkerError as err:
            figures.errors.setdefault(figure, []).append(str(err))
            if err.outcome in LOST:  # every process a kernel killed is a finding, beside the others' figure
                yield {"kind": "crash", **context, "outcome": err.outcome, "detail": str(err),
                       "stderr_tail": err.stderr_tail, "process": this_round.round_index + 1}
            elif not figures.records.get(figure):
                raise
        yield from figures.merged(figure)

    probe_s = VEC_ISA_PROBE_S if any(compiles_on_cpu(r["kwargs"]) for r in requests) else 0.0
    for round_index in range(count):
        ordered = compile_once(round_order(requests, round_index), round_index)
        this_round = _Round(api.open_worker, ordered, round_index)
        compiled_before = False  # a round is one process: its first compile pays inductor's set-up
        for index, request in enumerate(ordered):
            kwargs = request["kwargs"]
            compiles = kwargs.get("setup") in COMPILE_SETUPS
            estimate = (sampling_estimate_s(quick) + (INTERPRETER_START_S if index == 0 else 0.0)
                        + (probe_s if round_index == index == 0 else 0.0)
                        + (POOL_START_S if kwargs.get("setup") in pool_setups else 0.0)
                        + ((COMPILE_S if round_index == 0 else COMPILE_WARM_S)
                           + (0.0 if compiled_before else INDUCTOR_START_S) if compiles else 0.0))
            compiled_before = compiled_before or compiles
            context = {"stage": "timing", "figure": request["figure"], "model": request["model"],
                       "mode": request["mode"], **kwargs}
            steps.append(PlanStep("timing", f"timing {request['figure']} (process {round_index + 1} of {count})",
                              lambda r=this_round, i=index, f=request["figure"], c=context: produce(r, i, f, c),
                              context, estimate))
    steps.append(PlanStep("timing", f"timing: each figure's interval from its {count} processes",
                      lambda: iter(figures.merged()), {"stage": "timing"}, 0.0))
    return steps


def _pool_setups() -> set[str]:
    """The timing setups that run on suite.distributed's pool, as the variant registry declares."""
    from suite.cases.variants import CASES as VARIANTS

    return {variant.kwargs["setup"] for variant in VARIANTS if variant.distributed}


def sampling_estimate_s(quick: bool) -> float:
    from suite.timing.options import sampling_rules

    rules = sampling_rules(quick)
    return rules["min_run_time"] + rules["warmup_s"] + TIMING_OVERHEAD_S


def _convergence_step(device: str, spec, quick: bool) -> PlanStep:
    """One model's seeded runs to its synthetic target (real data is `torchsuite converge`'s: hours, not minutes)."""
    from suite.convergence.runs import DEFAULT_RUNS, QUICK_RUNS, plan_runs, run_job
    from suite.devices import require_device

    jobs = plan_runs([spec], runs=QUICK_RUNS if quick else DEFAULT_RUNS, data="synthetic")
    target = spec.convergence.synthetic
    return PlanStep("convergence", f"convergence {spec.name} on {device}: {len(jobs)} seeded runs to "
                f"{target.accuracy:g} held-out accuracy (synthetic)", lambda: convergence_records(spec.name, device, quick),
                {"stage": "convergence", "model": spec.name, "device": device},
                sum(job.estimate_s() for job in jobs), task=_task(convergence_records, spec.name, device, quick))


def convergence_records(model: str, device: str, quick: bool) -> Iterable[dict]:
    """One model's seeded runs to its synthetic target: a worker's task, a case a seed."""
    from suite.cases.models import CASES
    from suite.convergence.runs import DEFAULT_RUNS, QUICK_RUNS, plan_runs, run_job
    from suite.devices import require_device
    from suite.isolation import case

    for job in plan_runs([CASES.get(model)], runs=QUICK_RUNS if quick else DEFAULT_RUNS, data="synthetic"):
        unfinished = {"kind": "crash", "stage": "convergence", "model": model, "device": device, "seed": job.seed}
        if case(f"{model} seed {job.seed}", unfinished, budget_s=max(600.0, 10 * job.estimate_s())):
            yield run_job(job, device=require_device(device), quick=quick)


def _calibration_step(api: TimingApi, device: str, quick: bool) -> PlanStep:
    def produce():
        yield {"kind": "peak", "device": device, **api.calibrate(device, quick)}

    return PlanStep("calibration", f"peak FLOP/s on {device}", produce,
                {"stage": "calibration", "device": device}, 1.0 if quick else 3.0)


def _limit_steps(api: TimingApi, device: str, quick: bool, names: list[str] | None) -> list[PlanStep]:
    """One step per limit of suite.cases.limits; one that does not apply to the device yields a skip."""
    from suite.cases.limits import CASES as LIMITS

    if api.measure_limit is None:
        return []
    return [PlanStep("limits", f"limit {spec.name} on {device}",
                     lambda s=spec: api.measure_limit(s.name, device, quick),
                     {"stage": "limits", "limit": spec.name, "device": device},
                     spec.estimate_s[0 if quick else 1] if device in spec.devices else 0.0,
                     pool_key=("limits", device) if spec.name == "collectives" else None,
                     task=_task(api.measure_limit, spec.name, device, quick))
            for spec in LIMITS.select(names) if names is not None or spec.quick or not quick]


def plan(devices: list[str], models: list, quick: bool, verdict_sources: list[VerdictSource],
         timing: TimingApi, convergence: bool = False, limit_names: list[str] | None = None,
         timed: dict[str, list[str]] | None = None) -> list[PlanStep]:
    """The run's steps; `timed`: the model names to time per device (default `models` on each)."""
    timed = timed or {device: [spec.name for spec in models] for device in devices}
    steps = [_calibration_step(timing, device, quick) for device in devices]
    # Beside the calibrations, before anything of the suite's own runs: they use every core too.
    steps += [step for device in devices for step in _limit_steps(timing, device, quick, limit_names)]
    steps += [_conformance_step(source, device, quick) for device in devices for source in verdict_sources]
    steps += _timing_steps(timing, [case for device in devices
                                    for case in timing.iter_setups([device], quick, timed[device])], quick)
    if convergence:  # last: training runs use every core, like the timings, and take longest per step
        steps += [_convergence_step(device, spec, quick) for device in devices for spec in models
                  if spec.convergence is not None]
    return steps


def _error_record(step: PlanStep, err: BaseException) -> dict:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last and not getattr(err, "traceback", "") else ""
    return {"kind": "error", **step.context, "step": step.label,
            "detail": f"{one_line(err)}{where}",
            "traceback": getattr(err, "traceback", "")  # a worker's task's own (suite.isolation.TaskError)
            or "".join(traceback.format_exception(type(err), err, err.__traceback__))}


def _crash_record(step: PlanStep, crash: WorkerCrash) -> dict:
    """A step whose worker died or hung outside any case it announced: the step is the case."""
    return {"kind": "crash", **step.context, "step": step.label, "outcome": crash.outcome,
            "detail": crash.detail, "stderr_tail": crash.stderr_tail}


def _close_pools(worker: IsolatedWorker | None = None) -> None:
    from suite.distributed.pool import close_shared_pools

    close_shared_pools()
    if worker is not None and worker.running:
        try:
            worker.call("suite.distributed.pool:close_shared_pools")
        except SuiteError:  # it died closing them: a fresh worker takes the next step, with no pool
            worker.close()


def runs_beside(step: PlanStep) -> bool:
    """Whether `step` may run on a second worker beside the run's steps: a conformance source in a
    worker without pools. Checks only judge values, so a busy neighbour slows them without changing
    a verdict; timings, limits, calibrations and pooled steps use the machine alone."""
    return step.kind == "conformance" and step.task is not None and step.pool_key is None


def run_lanes() -> int:
    """The lanes a run's conformance sources share: two workers where there are two cores or more."""
    return 2 if usable_cores() > 1 else 1


def shared_lanes(steps: list[PlanStep], lanes: int) -> list[int]:
    """How many lanes share each step: `lanes` for a step of a group that runs_beside() (two or
    more such steps in a row), 1 for every other."""
    beside = [lanes > 1 and runs_beside(step) for step in steps]
    return [lanes if here and ((i > 0 and beside[i - 1]) or (i + 1 < len(steps) and beside[i + 1])) else 1
            for i, here in enumerate(beside)]


def plan_estimate_s(steps: list[PlanStep], lanes: int = 1) -> float:
    """The plan's estimated wall time: its steps one after another, except that with two lanes
    (execute's side worker) each run of steps that runs_beside() is shared, each lane taking the next
    step when it is free."""
    total, ends = 0.0, []
    for step in [*steps, None]:
        if step is not None and lanes > 1 and runs_beside(step):
            ends = ends or [0.0] * lanes
            ends[ends.index(min(ends))] += step.estimate_s
            continue
        total += max(ends, default=0.0) + (step.estimate_s if step is not None else 0.0)
        ends = []
    return total


class _SideLane:
    """A second worker taking steps of a group on a thread, while the run's thread takes the others
    (`take`, shared): its records reach the store through the run's thread (drain)."""

    def __init__(self, steps: list[PlanStep], take: Callable[[], int | None], worker: IsolatedWorker, first: int):
        self.steps, self.take, self.first = steps, take, first
        self._index, self._step, self._count = None, None, 0  # the step running on it, and its records so far
        self.finished = False  # it has no step left, and everything it produced is drained
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(worker,), name="torchsuite-side-lane", daemon=True)
        self._thread.start()

    def _run(self, worker: IsolatedWorker) -> None:
        try:
            while (index := self.take()) is not None:
                step, began = self.steps[index], time.monotonic()
                self._queue.put(("start", index))
                try:
                    for record in worker.run(step.task[0], *step.task[1]):
                        self._queue.put(("record", record))
                except Exception as err:  # noqa: BLE001 - the step's crash or error: the run records it
                    self._queue.put(("raised", err))
                self._queue.put(("end", time.monotonic() - began))
        finally:
            self._queue.put(("done", None))

    def drain(self, store: ResultsStore, progress: Progress, profile: list[dict], wait: bool = False) -> None:
        """Add what the lane produced so far (`wait`: all of it, until it has no step left)."""
        while not self.finished:
            try:
                what, value = self._queue.get(block=wait)
            except queue.Empty:
                return
            if what == "start":
                self._index, self._step, self._count = value, self.steps[value], 0
                progress.note(f"beside it, on a second worker: {self._step.label}")
            elif what == "record":
                _add(store, progress, self._step, value)
                self._count += 1
            elif what == "raised":
                _failed(store, progress, self._step, value)
                self._count += 1
            elif what == "end":
                profile.append({**_profiled(self._step, value, self._count), "beside": True})
                progress.finish_elsewhere(self._step.kind, self._step.label, value, self.first + self._index)
            else:
                self.finished = True


def _profiled(step: PlanStep, wall_s: float, records: int) -> dict:
    """A step's entry in the run's cost profile (run.steps), beside what the plan expected."""
    return {"label": step.label, "kind": step.kind, "estimate_s": round(step.estimate_s, 2),
            "wall_s": round(wall_s, 3), "records": records}


def _add(store: ResultsStore, progress: Progress, step: PlanStep, record: dict) -> None:
    if record.get("kind") == "peak":
        store.add_peak(record)
    else:
        store.add(record)
    if record.get("outcome") in LOST and not record.get("passed"):
        what = " ".join(str(record[k]) for k in ("suite", "case", "check", "figure", "model", "seed")
                        if record.get(k) is not None)
        progress.note(f"{what or step.label}: {record.get('detail', '')}")


def _failed(store: ResultsStore, progress: Progress, step: PlanStep, err: Exception) -> None:
    """A step that raised is a finding, not the end of the run: its crash or error record."""
    if isinstance(err, WorkerCrash):
        store.add(_crash_record(step, err))
        progress.note(f"{err.outcome} in {step.label}: {err.detail}")
    else:
        record = _error_record(step, err)
        store.add(record)
        progress.note(f"error in {step.label}: {record['detail']}")


def execute(steps: list[PlanStep], store: ResultsStore, progress: Progress,
            release_pools: Callable[..., None] = _close_pools,
            before_first_timing: Callable[[], None] | None = None, worker: IsolatedWorker | None = None,
            side_worker: IsolatedWorker | None = None, first: int = 0) -> None:
    """Run `steps` in order into `store`, each step with a task in `worker` when one is given;
    pools are released as soon as their part of the run ends. `first`: the position of `steps[0]`
    in the plan that `progress` counts.

    With `side_worker`, consecutive steps that runs_beside() are a group that two lanes take in
    order, this thread on `worker` and a thread on `side_worker`, each its next step as soon as it
    is free: in a full run the op sweep runs beside the compile checks, most of its conformance."""
    profile = store.data["run"].setdefault("steps", [])
    lock, position, side = threading.Lock(), 0, None

    def take() -> int | None:
        """The next step for a lane; None at the end, and at the end of a group while two lanes run."""
        nonlocal position
        with lock:
            if position == len(steps) or (side is not None and not runs_beside(steps[position])):
                return None
            position += 1
            return position - 1

    try:
        while True:
            index = take()
            if index is None:
                if side is None:
                    return
                side.drain(store, progress, profile, wait=True)  # the group's last step on the other lane
                side = None
                continue
            step = steps[index]
            if (side_worker is not None and side is None and runs_beside(step) and index + 1 < len(steps)
                    and runs_beside(steps[index + 1])):
                side = _SideLane(steps, take, side_worker, first)
            _run_step(step, first + index, store, progress, profile, worker, side,
                      before_first_timing if step.kind == "timing" else None)
            if step.kind == "timing":
                before_first_timing = None
            following = steps[index + 1].pool_key if index + 1 < len(steps) else None
            if step.pool_key is not None and following != step.pool_key:
                release_pools(*([worker] if worker is not None else []))
    finally:  # stopped midway (Ctrl-C): the other lane takes nothing more, and what it finished is kept
        with lock:
            position = len(steps)
        if side is not None:
            side.drain(store, progress, profile)


def _run_step(step: PlanStep, index: int, store: ResultsStore, progress: Progress, profile: list[dict],
              worker: IsolatedWorker | None, side: _SideLane | None, before: Callable[[], None] | None) -> None:
    began, count_before = time.monotonic(), len(store.records)  # a wait before it is its own
    if before is not None:
        before()
    progress.start(step.kind, step.label, index)
    try:
        with store.batched():
            produced = worker.run(step.task[0], *step.task[1]) if worker and step.task else step.produce()
            for record in produced:
                _add(store, progress, step, record)
                if side is not None:  # the other lane's records, as they come
                    count_before -= len(store.records)
                    side.drain(store, progress, profile)
                    count_before += len(store.records)  # not this step's
    except Exception as err:  # noqa: BLE001 - _failed records it
        _failed(store, progress, step, err)
    profile.append(_profiled(step, time.monotonic() - began, len(store.records) - count_before))
    progress.finish()


def not_as_declared(records: list[dict]) -> int:
    """How many records say something was not as declared: a verdict that did not pass, a case
    or step that crashed or hung, a step that raised. `torchsuite run` exits 1 when there is one."""
    return sum(r.get("kind") in ("crash", "error") or (r.get("kind") == "conformance" and not r.get("passed"))
               for r in records)


def slowest_steps(steps: list[dict], count: int = 5) -> list[str]:
    """The `count` slowest of a run's recorded steps, one line each: wall time, estimate, label."""
    ranked = sorted(steps, key=lambda s: s["wall_s"], reverse=True)[:count]
    return [f"{s['wall_s']:7.1f} s (estimate {s['estimate_s']:.0f} s)  {s['label']}" for s in ranked]


def describe_plan(steps: list[PlanStep]) -> list[dict]:
    """The plan as --dry-run shows it: one row per step, with its estimated seconds."""
    return [{"step": i, "kind": s.kind, "label": s.label, "estimate_s": s.estimate_s,
             "uses_worker_pool": s.uses_worker_pool} for i, s in enumerate(steps, 1)]


def _summary(records: list[dict]) -> str:
    verdicts = [r for r in records if r.get("kind") == "conformance"]
    lost = sum(not r.get("passed") and r.get("outcome") in LOST for r in verdicts)
    failed = sum(not r.get("passed") for r in verdicts) - lost
    count = lambda kind: sum(r.get("kind") == kind for r in records)  # noqa: E731
    flagged = sum(bool(set(r.get("flags") or []) - {"quick"}) for r in records if r.get("kind") == "timing")
    converged = sum(bool(r.get("converged")) for r in records if r.get("kind") == "convergence")
    return (f"{len(verdicts) - failed - lost} checks passed, {failed} failed, "
            f"{lost + count('crash')} crashed or hung, {count('error')} errors, "
            f"{count('timing')} timings ({flagged} flagged), {count('limit')} limits, {count('skipped')} skipped"
            + (f", {converged}/{count('convergence')} convergence runs reached their target"
               if count("convergence") else ""))


@contextlib.contextmanager
def _restored_env(name: str):
    """Whatever the block sets `name` to in this process's environment is undone after it."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def compiles_on_cpu(kwargs: dict) -> bool:
    """Whether a timing compiles with inductor on the CPU: what its vector-ISA check is for."""
    return kwargs.get("setup") == "cpu-compile"


def _before_timings(steps: list[PlanStep]) -> Callable[[], None]:
    """Starts what the timings need, as early as it may start; returns what waits for it."""
    waits = []
    if any(step.uses_worker_pool and not step.task for step in steps):  # a pool here, not in the worker
        from suite.distributed.pool import start_fork_server, wait_for_fork_server

        # After the calibrations, which use every core: its seconds of importing torch
        # overlap the conformance steps, and the first timing waits until they are over.
        if start_fork_server():
            waits.append(wait_for_fork_server)
    if any(step.kind == "timing" and compiles_on_cpu(step.context) for step in steps):
        from suite.vec_isa import start_vec_isa_probe

        # Once here, not once in every timing process; on a thread beside the conformance steps.
        waits.append(start_vec_isa_probe())
    return lambda: [wait() for wait in waits]


def make_plan(*, device_request: str = "all", model_names: list[str] | None = None, quick: bool = False,
              verdict_sources: list[VerdictSource] | None = None, timing: TimingApi | None = None,
              convergence: bool = False, limit_names: list[str] | None = None, workloads: str = "default"):
    """(devices, models, steps) of a run; a bad model, workload set or limit name, or an absent
    device, raises here.

    `model_names`: the models to time on every device; None: each device's share of the
    `workloads` set (suite.cases.models.models_for). `limit_names`: the limits to measure
    (suite.cases.limits; None: every one, [] none).

    `convergence` adds the time-to-accuracy runs (the CLI's `run` does; off here by default, so that
    a caller after timings or checks alone does not pay for training runs)."""
    from suite.cases.models import CASES, models_for
    from suite.devices import resolve_devices

    devices = resolve_devices(device_request)
    timed = {device: CASES.select(model_names) if model_names is not None else CASES.select(models_for(device, workloads))
             for device in devices}
    models = list({spec.name: spec for device in devices for spec in timed[device]}.values())
    if verdict_sources is None:
        from suite.conformance.sources import VERDICT_SOURCES as verdict_sources
    steps = plan(devices, models, quick, list(verdict_sources), timing or default_timing_api(), convergence,
                 limit_names, {device: [spec.name for spec in specs] for device, specs in timed.items()})
    return devices, models, steps


def run_suite(*, device_request: str = "all", model_names: list[str] | None = None, quick: bool = False,
              out_dir="results", report_dir="reports", machine_name: str | None = None,
              verdict_sources: list[VerdictSource] | None = None, timing: TimingApi | None = None,
              stream=None, convergence: bool = False, limit_names: list[str] | None = None,
              workloads: str = "default", case_timeout_s: float | None = None) -> Path:
    """Run everything, write the results file and this machine's report; the results file's path.

    `case_timeout_s`: seconds any one case may take in the worker before it is called hung
    (default: each case's own budget, suite.isolation)."""
    from suite.environment import capture
    from suite.timing.machine_state import snapshot

    began = time.monotonic()
    timing = timing or default_timing_api()
    devices, models, steps = make_plan(device_request=device_request, model_names=model_names, quick=quick,
                                       verdict_sources=verdict_sources, timing=timing, convergence=convergence,
                                       limit_names=limit_names, workloads=workloads)
    stream = stream if stream is not None else sys.stderr
    store = ResultsStore(out_dir, capture(machine_name), run={
        "devices": devices, "models": [m.name for m in models], "quick": quick,
        "verdict_sources": list(dict.fromkeys(s.context["source"] for s in steps if s.kind == "conformance")),
        "convergence": convergence,
        "machine_state": {"start": snapshot(), "end": None}})
    # The fixed costs around the steps: the plan, the environment's capture, then the report.
    store.data["run"]["costs_s"] = {"plan_and_environment": round(time.monotonic() - began, 3)}
    calibrations = [s for s in steps if s.kind in ("calibration", "limits")]  # the plan's first steps
    rest = steps[len(calibrations):]
    lanes = run_lanes()
    progress = Progress([s.kind for s in steps], stream=stream, estimates=[s.estimate_s for s in steps],
                        lanes=shared_lanes(steps, lanes))
    progress.note(f"writing results to {store.path}")
    worker, side_worker = IsolatedWorker(case_timeout_s), IsolatedWorker(case_timeout_s)
    with store.recording(progress.close), _restored_env(PEAKS_ENV), contextlib.closing(worker), \
            contextlib.closing(side_worker):
        execute(calibrations, store, progress, worker=worker)
        # Timing workers take these calibrations, measured before anything else ran, instead of
        # measuring their own beside whatever the machine is doing by then (suite.timing.worker).
        os.environ[PEAKS_ENV] = json.dumps({"quick": quick, "peaks": store.data["peaks"]})
        execute(rest, store, progress, before_first_timing=_before_timings(rest), worker=worker,
                side_worker=side_worker if lanes > 1 else None, first=len(calibrations))
        timing.attach_scaling_efficiency([r for r in store.records if r.get("kind") == "timing"])
    store.data["run"]["machine_state"]["end"] = snapshot()
    store.finish("complete")
    progress.close(f"{_summary(store.records)}; results: {store.path}")

    from suite.report import build_report

    report_began = time.monotonic()
    written = build_report([store.path], out_dir=report_dir)
    costs = store.data["run"]["costs_s"]
    costs["report"] = round(time.monotonic() - report_began, 3)
    costs["total"] = round(time.monotonic() - began, 3)
    store.save()
    stream.write(f"report: {Path(report_dir) / 'report.md'} ({len(written)} files)\n")
    stream.write(f"the slowest steps of {costs['total']:.0f} s (plan and environment "
                 f"{costs['plan_and_environment']:.1f} s, report {costs['report']:.1f} s):\n")
    stream.writelines(f"  {line}\n" for line in slowest_steps(store.data["run"]["steps"]))
    return store.path
