"""check_ops: OpInfo's operators, each in the dtypes a device supports, against float64.

    report = suite.check_ops(["add", "nn.functional.gelu"], dtypes=["float32", "bfloat16"])
    print(report)            # counts, then every verdict that is not as declared
    assert report.passed     # every verdict as OpInfo (or the suite) declares

One verdict per (op, variant, dtype, check):
- forward: the op on the device, on OpInfo's sample inputs in the dtype, against the same op on
  the same values upcast to float64 on the CPU (suite.conformance.ops.compare says how close);
- backward: for ops OpInfo says support autograd in that dtype, the gradient of every input
  that requires one under a random cotangent (a vjp), against float64 the same way;
- method, inplace, out: the op's other forms where OpInfo declares them (x.op(...),
  x.op_(...) read back from x, op(..., out=...) read back from out), each against the same
  float64 reference as forward. A sample whose result the input cannot hold (it broadcasts the
  input, or its result has another shape or a dtype the input cannot take) is not given to inplace.
Every sample is checked as OpInfo makes it, as a non-contiguous copy and, with 4-d tensors, in
channels_last (LAYOUTS).
Outputs go through the sample's output_process_fn_grad first, as OpInfo's own comparisons do
(it keeps what is well defined: the magnitudes of an SVD's vectors, not their signs).

Outcomes: pass, fail, crash (the op raised, or in a worker killed its process: a signal, abort(),
an exit), timeout (in a worker: past CASE_BUDGET_S), out_of_memory, expected_failure,
unexpected_pass (declared to fail, and did not), approximate (declared limited by its dtype's
precision: the error is reported, not judged), skip (declared not to apply, or no autograd).
`passed` means "as declared" (suite.conformance.result.meets): an expected failure passes, an
unexpected pass does not, and a case that killed its process never does. Nothing raises for a
failing op: a crash is a verdict with the exception in one line. `torchsuite ops` and
`torchsuite run` check in a worker process (suite.isolation), so that a kernel that kills its
process is a verdict naming its op, dtype and sample, and the other ops are still judged.
"""
from __future__ import annotations

import collections
import functools
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch
from torch.utils._pytree import tree_leaves, tree_map

from suite.cases.expect import APPROXIMATE, FAILS, NOT_APPLICABLE, Expect
from suite.cases.opinfo import CHECKS, VARIANT_CHECKS, OpCase, cases
from suite.conformance.ops.compare import DEFAULT_TOLERANCES, Comparison, compare, tolerances
from suite.conformance.result import meets
from suite.devices import manual_seed
from suite.errors import SuiteError, one_line
from suite.isolation import case as announce_case, free_device_memory, in_worker, where
from suite.threads import torch_threads

OUTCOMES = ("pass", "fail", "crash", "timeout", "out_of_memory", "expected_failure", "unexpected_pass",
            "approximate", "skip")


@dataclass(frozen=True)
class OpVerdict:
    case: str  # OpInfo name, then ".variant" when it has one
    op: str
    variant: str
    dtype: str
    check: str
    outcome: str  # one of OUTCOMES
    expected: str  # "passes", "fails" or "not_applicable"
    passed: bool  # as declared
    error: float | None = None  # the worst element's |difference| / allowed (above 1 fails)
    element_error: float | None = None  # the same against each element's own tolerance: error unless scaled
    max_abs: float | None = None
    sample: str = ""  # the sample that gave the worst error, or the crash
    detail: str = ""
    tolerance: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.case} {self.check} {self.dtype}: {self.outcome} ({self.detail})"


@dataclass
class OpsReport:
    device: str
    verdicts: list[OpVerdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def counts(self) -> dict[str, int]:
        found = collections.Counter(v.outcome for v in self.verdicts)
        return {outcome: found.get(outcome, 0) for outcome in OUTCOMES}

    def failures(self) -> list[OpVerdict]:
        """The verdicts that are not as declared: failures, crashes, unexpected passes."""
        return [v for v in self.verdicts if not v.passed]

    def verdict(self, case: str, check: str, dtype: str) -> OpVerdict:
        for v in self.verdicts:
            if (v.case, v.check, v.dtype) == (case, check, dtype):
                return v
        raise KeyError(f"no verdict for {case} {check} {dtype}")

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in self.counts().items())
        ops = len({v.case for v in self.verdicts})
        lines = [f"check_ops on {self.device}: {ops} ops, {len(self.verdicts)} verdicts: {counts}"]
        lines += [f"  NOT AS DECLARED {v}" + (f" [sample {v.sample}]" if v.sample else "") for v in self.failures()]
        return "\n".join(lines)


def dtype_of(name) -> torch.dtype:
    dtype = name if isinstance(name, torch.dtype) else getattr(torch, str(name).replace("torch.", ""), None)
    if dtype not in DEFAULT_TOLERANCES:
        raise SuiteError(f"unknown dtype {name!r}; check_ops checks float32, bfloat16 and float16 against float64")
    return dtype


def _seed(*parts) -> int:
    return zlib.crc32(" ".join(map(str, parts)).encode())


def _samples(case: OpCase, device: str, dtype: torch.dtype, requires_grad: bool, limit: int | None) -> list:
    with torch.random.fork_rng(devices=[]):  # make_tensor draws from the global generator
        manual_seed(_seed(case.name, dtype))
        found = []
        for sample in case.info.sample_inputs(device, dtype, requires_grad=requires_grad):
            found.append(sample)
            if limit is not None and len(found) >= limit:
                break
    return found


def _copy(sample, device, to_float64: bool, requires_grad: bool):
    """The sample's tensors anew (fresh leaves, so nothing is shared between the two runs),
    floating ones in float64 on `device` when to_float64."""
    def wide(dtype: torch.dtype) -> torch.dtype:
        if not to_float64 or not (dtype.is_floating_point or dtype.is_complex):
            return dtype
        return torch.complex128 if dtype.is_complex else torch.float64

    def copy(value):
        if isinstance(value, torch.dtype):  # a dtype argument (a factory's, a cast's) follows the tensors
            return wide(value)
        out = value.detach().to(device=device, dtype=wide(value.dtype), copy=True)
        return out.requires_grad_(requires_grad and value.requires_grad and (out.is_floating_point() or out.is_complex()))

    return sample.transform(copy)


def _seeded(fn: Callable, sample, seed: int, **extra):
    with torch.random.fork_rng(devices=[] if sample_device(sample) == "cpu" else None):
        manual_seed(seed)  # an op that draws random numbers draws the same ones in every run
        return fn(sample.input, *sample.args, **sample.kwargs, **extra)


def _call(case: OpCase, sample, seed: int, fn: Callable | None = None):
    """The op (or `fn`, another of its forms) on `sample`, its output as OpInfo compares it."""
    return sample.output_process_fn_grad(_seeded(fn or case.info, sample, seed))


class _CannotTake(Exception):
    """The form cannot take this sample (an in-place op whose result the input cannot hold)."""


def _call_form(case: OpCase, form: str, sample, seed: int):
    """The op called in `form` (forward: the function; VARIANT_CHECKS' forms), its result as
    _call gives the function's: what the form leaves where a program reads it."""
    if form in ("forward", "method"):
        return _call(case, sample, seed, case.info.method_variant if form == "method" else None)
    expected = _seeded(case.info, sample, seed)
    if form == "inplace":
        holds = (isinstance(expected, torch.Tensor) and expected.shape == sample.input.shape
                 and torch.promote_types(expected.dtype, sample.input.dtype) == sample.input.dtype)
        if not holds or getattr(sample, "broadcasts_input", False):
            raise _CannotTake("its result does not fit in its input")
        _seeded(case.info.inplace_variant, sample, seed)
        return sample.output_process_fn_grad(sample.input)
    leaves = tree_leaves(expected)
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise _CannotTake("an output that is not a tensor")
    out = tree_map(torch.empty_like, expected)  # a tensor, or the outputs' tuple as the op returns it
    _seeded(case.info, sample, seed, out=out)
    return sample.output_process_fn_grad(out)


def sample_device(sample) -> str:
    tensors = [t for t in tree_leaves((sample.input, sample.args, sample.kwargs)) if isinstance(t, torch.Tensor)]
    return tensors[0].device.type if tensors else "cpu"


class _ReferenceRaised(Exception):
    pass


# The layouts each sample is checked in: as OpInfo makes it; a non-contiguous copy of the same
# values (OpInfo's SampleInput.noncontiguous(): every tensor a strided view with NaN between its
# elements), as real programs pass them: a kernel that ignores its input's strides reads the NaN;
# and, where the sample has 4-d tensors (images: convolution, pooling, normalisation,
# interpolation), those in channels_last, the memory format vision models run in, which many
# kernels take on a path of their own. A maker returns None where its layout is the contiguous one.
CONTIGUOUS, NONCONTIGUOUS, CHANNELS_LAST = "contiguous", "non-contiguous", "channels-last"


def _channels_last(sample):
    images = [t for t in tree_leaves((sample.input, sample.args, sample.kwargs))
              if isinstance(t, torch.Tensor) and t.dim() == 4 and t.layout == torch.strided]
    if all(t.is_contiguous(memory_format=torch.channels_last) for t in images):
        return None  # none, or all already channels_last (one channel, or 1x1 images)

    def channels_last(value):
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.layout != torch.strided:
            return value
        return value.detach().contiguous(memory_format=torch.channels_last).requires_grad_(value.requires_grad)

    return sample.transform(channels_last)


LAYOUTS = {CONTIGUOUS: lambda sample: sample, NONCONTIGUOUS: lambda sample: sample.noncontiguous(),
           CHANNELS_LAST: _channels_last}


def _layouts(case: OpCase, device: str, dtype: torch.dtype) -> dict:
    return LAYOUTS if case.strided(device, dtype) else {CONTIGUOUS: LAYOUTS[CONTIGUOUS]}


class _CopyRaised(Exception):
    """The op raised on a copy of a sample (non-contiguous, channels-last) it took as OpInfo made it."""

    def __init__(self, layout: str, error: Exception):
        super().__init__(f"on its {layout} copy: {one_line(error)}")
        self.layout = layout


def _each_layout(layouts: dict, run: Callable) -> dict:
    """run(sample maker) for each layout that makes a sample of its own, in order; what a copy
    raises says which copy it was."""
    found = {}
    for layout, make in layouts.items():
        try:
            found[layout] = run(make)
        except _NoCopy:
            continue
        except Exception as error:
            if layout == CONTIGUOUS or isinstance(error, (torch.OutOfMemoryError, _CannotTake)):
                raise
            raise _CopyRaised(layout, error) from error
    return found


class _NoCopy(Exception):
    """The layout is the sample's own (channels-last for a sample without 4-d tensors)."""


def _made(make: Callable, sample):
    made = make(sample)
    if made is None:
        raise _NoCopy
    return made


def _forward(case: OpCase, sample, device: str, seed: int, tol: tuple, layouts: dict,
             form: str = "forward") -> dict[str, Comparison]:
    actual = _each_layout(layouts, lambda make: _call_form(case, form, _made(make, _copy(sample, device, False, False)),
                                                             seed))
    try:
        reference = _call(case, _copy(sample, "cpu", True, False), seed)
    except Exception as error:
        raise _ReferenceRaised(one_line(error)) from error
    return {layout: compare(out, reference, *tol) for layout, out in actual.items()}


def _outputs_and_inputs(case: OpCase, sample, seed: int) -> tuple[list, list]:
    """The op's differentiable outputs on `sample`, and the sample's tensors that require a gradient."""
    out = tree_leaves(_call(case, sample, seed))
    inputs = [t for t in tree_leaves((sample.input, sample.args, sample.kwargs))
              if isinstance(t, torch.Tensor) and t.requires_grad]
    return [o for o in out if isinstance(o, torch.Tensor) and o.requires_grad], inputs


def _vjp(outputs: list, inputs: list, cotangents: list) -> list:
    grads = torch.autograd.grad(outputs, inputs, [c.to(o.device, o.dtype) for c, o in zip(cotangents, outputs)],
                                allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def _backward(case: OpCase, sample, device: str, seed: int, tol: tuple, layouts: dict) -> dict[str, Comparison] | str:
    outputs, inputs = _outputs_and_inputs(case, _copy(sample, device, False, True), seed)
    if not outputs or not inputs:
        return "no differentiable output" if inputs else "no input requires a gradient"
    generator = torch.Generator().manual_seed(seed)
    # one cotangent, rounded to the output's dtype, so that every run gets the same values
    cotangents = [torch.randn(o.shape, generator=generator, dtype=torch.complex128 if o.is_complex() else torch.float64)
                  .to(o.dtype) for o in outputs]
    grads = {CONTIGUOUS: _vjp(outputs, inputs, cotangents)}
    grads.update(_each_layout({k: v for k, v in layouts.items() if k != CONTIGUOUS}, lambda make: _vjp(
        *_outputs_and_inputs(case, _made(make, _copy(sample, device, False, True)), seed), cotangents)))
    try:
        reference = _vjp(*_outputs_and_inputs(case, _copy(sample, "cpu", True, True), seed), cotangents)
    except Exception as error:
        raise _ReferenceRaised(one_line(error)) from error
    return {layout: compare(found, reference, *tol) for layout, found in grads.items()}


def _judge(case: OpCase, check: str, dtype: torch.dtype, expected: Expect | None, start: float, *,
           comparison: Comparison | None = None, crash: str = "", sample: str = "", tolerance: str = "",
           skip: str = "", out_of_memory: bool = False, layout: str = CONTIGUOUS,
           element_error: float | None = None, partial: bool = False) -> OpVerdict:
    declared = "passes" if expected is None else expected.outcome
    common = dict(case=case.name, op=case.op, variant=case.variant, dtype=str(dtype).replace("torch.", ""),
                  check=check, expected=declared, sample=sample, tolerance=tolerance)
    if skip:
        return OpVerdict(**common, outcome="skip", passed=True, detail=skip, seconds=time.perf_counter() - start)
    failed = bool(crash) or not comparison.passed
    passed = meets(expected, failed)
    if expected is not None and expected.outcome == FAILS:
        outcome = "expected_failure" if failed else "unexpected_pass"
    elif expected is not None and expected.outcome == APPROXIMATE:
        outcome = "approximate"  # its error is reported, not judged
    else:
        outcome = "out_of_memory" if out_of_memory else "crash" if crash else "fail" if failed else "pass"
    what = crash or (f"error {comparison.error:.3g} x allowed, {comparison.detail}" if comparison.error
                     else "equal to float64" if comparison.max_abs == 0 else
                     f"within the tolerance ({comparison.detail})")
    if comparison is not None and comparison.error and not failed:
        what = f"error {comparison.error:.3g} x allowed (within), {comparison.detail}"
    if comparison is not None and comparison.error and layout != CONTIGUOUS:
        what += f", on the sample's {layout} copy"
    if comparison is not None and element_error is not None and element_error > comparison.error:
        what += f" (against each element's own tolerance: {element_error:.3g} x allowed)"
    why = f" [{expected.why}]" if expected is not None else ""
    if outcome == "unexpected_pass" and partial:  # the failure may be on a sample not checked
        passed, why = True, why + " (on some of its samples only: not judged out of date)"
    return OpVerdict(**common, outcome=outcome, passed=passed,
                     error=None if comparison is None else comparison.error, element_error=element_error,
                     max_abs=None if comparison is None else comparison.max_abs,
                     detail=f"{outcome.replace('_', ' ')}: {what}{why}", seconds=time.perf_counter() - start)


def check_case(case: OpCase, check: str, device: str, dtype: torch.dtype, samples: int | None = None) -> OpVerdict:
    """One verdict: `check` of `case` in `dtype` on `device`, over at most `samples` samples."""
    start = time.perf_counter()
    expected = case.expect(check, device, dtype)
    if expected is not None and expected.outcome == NOT_APPLICABLE:
        return _judge(case, check, dtype, expected, start, skip=expected.why)
    if check == "backward" and not case.supports_backward(device, dtype):
        why = "OpInfo: no autograd" if not case.info.supports_autograd else f"OpInfo: no backward in {dtype}"
        return _judge(case, check, dtype, expected, start, skip=why)
    rtol, atol = tolerances(dtype, case.tolerance(check, device, dtype))
    scaled = case.scaled(check, device, dtype)
    tolerance = f"rtol {rtol:.3g} x the element's magnitude + atol {atol:.3g}" + (
        " + rtol x the output's largest magnitude (declared: its small elements cancel)" if scaled else "")
    run = _backward if check == "backward" else functools.partial(_forward, form=check)
    layouts = _layouts(case, device, dtype)
    try:
        found = _samples(case, device, dtype, check == "backward", samples)
    except Exception as error:
        return _judge(case, check, dtype, expected, start, crash=f"making sample inputs raised {one_line(error)}",
                      tolerance=tolerance)
    worst, worst_sample, worst_layout, unchecked, element_error = None, "", CONTIGUOUS, "", 0.0
    for index, sample in enumerate(found):
        if in_worker():  # a crash in this sample names it (suite.isolation)
            where(sample=sample.summary())
        try:
            result = run(case, sample, device, _seed(case.name, dtype, index), (rtol, atol, scaled), layouts)
        except _ReferenceRaised as error:
            return _judge(case, check, dtype, expected, start, crash=f"the float64 reference raised {error}",
                          sample=sample.summary(), tolerance=tolerance)
        except torch.OutOfMemoryError as error:  # its own verdict; the next op starts with the cache freed
            del error  # its traceback holds the sample's tensors
            free_device_memory()
            return _judge(case, check, dtype, expected, start, crash="raised torch.OutOfMemoryError",
                          sample=sample.summary(), tolerance=tolerance, out_of_memory=True)
        except _CannotTake as error:
            unchecked = f"the {check} form cannot take them: {error}"
            continue
        except _CopyRaised as error:
            return _judge(case, check, dtype, expected, start, crash=f"raised {error}",
                          sample=f"{error.layout}: {sample.summary()}", tolerance=tolerance)
        except Exception as error:
            return _judge(case, check, dtype, expected, start, crash=f"raised {one_line(error)}",
                          sample=sample.summary(), tolerance=tolerance)
        if isinstance(result, str):
            unchecked = result
            continue
        for layout, comparison in result.items():  # the contiguous one first: it names a tie
            element_error = max(element_error, comparison.element_error)
            if worst is None or comparison.error > worst.error:
                worst, worst_layout = comparison, layout
                worst_sample = (f"{layout}: " if layout != CONTIGUOUS else "") + sample.summary()
    if worst is None:
        return _judge(case, check, dtype, expected, start,
                      skip=f"no sample to check ({unchecked})" if unchecked else "OpInfo gives no sample input")
    return _judge(case, check, dtype, expected, start, comparison=worst, sample=worst_sample, tolerance=tolerance,
                  layout=worst_layout, element_error=element_error, partial=samples is not None and len(found) >= samples)


# Seconds one (op, dtype, check) may take in a worker before it is called hung: the slowest of
# op_db's cases at every sample takes a few seconds on 2 cores.
CASE_BUDGET_S = 120.0


def iter_verdicts(selected: Iterable[OpCase], device: str, dtypes, checks, samples: int | None,
                  pending: Callable[[OpVerdict], dict] | None = None):
    """Verdicts one at a time, on one thread, warnings silenced (the ops' deprecation notes).

    `pending`: in a worker (suite.isolation), the record a case becomes should its process die
    or hang, from its verdict-to-be; each case is announced with it before it runs."""
    for case in selected:
        for dtype in case.dtypes(device):
            if dtype not in dtypes:
                continue
            for check in checks:
                if not case.has(check):
                    continue
                if pending is not None and not announce_case(
                        f"{case.name} {check} {dtype}", pending(_unfinished(case, check, device, dtype)), CASE_BUDGET_S):
                    continue  # started by a worker that died: it has its verdict
                with torch_threads(1), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    yield check_case(case, check, device, dtype, samples)


def _unfinished(case: OpCase, check: str, device: str, dtype: torch.dtype) -> OpVerdict:
    expected = case.expect(check, device, dtype)
    return OpVerdict(case=case.name, op=case.op, variant=case.variant, dtype=str(dtype).replace("torch.", ""),
                     check=check, outcome="crash", expected="passes" if expected is None else expected.outcome,
                     passed=False)


def validated(ops, dtypes, checks, samples: int | None) -> tuple[list[OpCase], tuple, tuple]:
    """(cases, dtypes, checks) as check_ops takes them; SuiteError for an unknown op, dtype or
    check, or fewer than one sample."""
    from suite.cases.opinfo import CHECKED_DTYPES

    selected = cases(ops)
    wanted = CHECKED_DTYPES if dtypes is None else tuple(dtype_of(d) for d in dtypes)
    checks = (checks,) if isinstance(checks, str) else tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise SuiteError(f"unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
    if samples is not None and samples < 1:
        raise SuiteError(f"samples must be at least 1, got {samples}")
    return selected, wanted, checks


def check_ops(ops=None, device: str = "cpu", dtypes=None, checks=CHECKS, samples: int | None = None,
              progress: Callable[[OpVerdict], object] | None = None) -> OpsReport:
    """Check OpInfo's ops (all of op_db when `ops` is None) on `device` in `dtypes` (default every
    checked dtype OpInfo says the op supports there: float32, bfloat16, float16), at most
    `samples` sample inputs each (default all). Never raises for a failing op; raises SuiteError
    for an unknown op, dtype or check, and ImportError without expecttest and hypothesis."""
    selected, wanted, checks = validated(ops, dtypes, checks, samples)
    report = OpsReport(device)
    for verdict in iter_verdicts(selected, device, wanted, checks, samples):
        report.verdicts.append(verdict)
        if progress is not None:
            progress(verdict)
    return report


def as_dict(verdict: OpVerdict) -> dict:
    return asdict(verdict)
