"""check_function: the checks a custom torch.autograd.Function must pass.

    report = check_function(MyFn, (x, y, 2.0), reference=lambda x, y, k: k * x * y)
    print(report)            # one row per check: pass, fail or skip, with a detail
    assert report.passed     # or: assert_function_conforms(MyFn, (x, y, 2.0))

A Function whose gradient is not its derivative on purpose (a straight-through estimator,
gradient reversal, a scaled gradient) declares the gradient it intends:

    check_function(StraightThrough, (x, 0.25),
                   backward_reference=lambda inputs, grad_outputs: (grad_outputs[0], None))

backward_reference(inputs, grad_outputs) gets forward's inputs and what backward gets (one
gradient per output) and returns one gradient per input, None allowed; autograd treats its
result exactly as it treats backward's.

It checks what applies, from what the Function declares:
- forward runs; with a reference, its outputs equal the reference's;
- gradcheck (first order), or with a backward_reference, backward equals the declared gradient;
- gradgradcheck (second order), or, when backward is @once_differentiable, that double
  backward raises a clear error instead;
- forward mode (gradcheck with check_forward_ad, or with a backward_reference: the declared
  gradient's transpose) when the Function defines jvp;
- vmap (outputs and per-sample vjps equal a loop) when it sets generate_vmap_rule or defines vmap;
- backward is reentrant: the same backward twice gives bit-identical gradients;
- backward returns what autograd accepts: one gradient per forward input (extra trailing Nones
  allowed), None for each non-tensor input, shapes autograd can sum to the input's;
- integer and mark_non_differentiable outputs stay non-differentiable (they, and non-tensor
  outputs, are left out of every derivative check);
- needs_input_grad: with one input frozen, the others' gradients do not change;
- under torch.compile (aot_eager, fullgraph), the outputs and gradients of eager; a Function
  dynamo cannot trace whole is reported as a graph break, not a failure, and one of which the
  backend receives no graph at all (it runs eagerly) gets the verdict not_compiled, which is
  not a failure but not a pass either (suite/conformance/result.py);
- with a reference (and no backward_reference), equal first- and second-order gradients.

Everything runs in float64 (floating inputs are converted; finite differences need double
precision, see suite/conformance/autograd/gradcheck.py). Tolerances: gradcheck's eps 1e-6, atol 1e-5,
rtol 1e-3; comparisons with the reference use assert_close's float64 defaults, rtol 1e-7,
atol 1e-7; reentrancy demands exact equality on the CPU. A failing Function never raises: every problem
becomes a "fail" row whose detail says by how much.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.autograd import Function

from suite.conformance.functions.checks import FunctionChecks, declares_vmap, defines
from suite.conformance.functions.gradients import NON_DIFFERENTIABLE
from suite.cases.expect import expectation, validate
from suite.conformance.result import CheckResult, NamedChecks, result_record, run_check, verdict_record
from suite.isolation import case as announce


@dataclass
class FunctionReport(NamedChecks):
    function: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


    def __str__(self) -> str:
        width = max(len(c.name) for c in self.checks)
        verdict_width = max([len(c.verdict) for c in self.checks] + [len("verdict")])
        problems = ([f"FAILS {', '.join(self.failures())}"] if self.failures() else []) + (
            [f"NOT COMPILED {', '.join(self.not_compiled())} (ran eagerly: nothing compiled was checked)"]
            if self.not_compiled() else [])
        status = "conforms" if self.passed else "; ".join(problems)
        lines = [f"check_function({self.function}): {status}",
                 f"  {'check':<{width}}  {'verdict':<{verdict_width}}  detail"]
        lines += [f"  {c.name:<{width}}  {c.verdict:<{verdict_width}}  {c.detail}" for c in self.checks]
        return "\n".join(lines)


NO_REFERENCE = "no reference given"
ONCE = "backward is @once_differentiable"
DECLARED = "backward_reference declares the intended gradient (the backward_reference check)"


def _needs_reference(checks: FunctionChecks) -> str | None:
    return None if checks.reference is not None else NO_REFERENCE


def _not_declared(checks: FunctionChecks) -> str | None:
    return DECLARED if checks.declared is not None else None


def _has_non_differentiable_output(checks: FunctionChecks) -> str | None:
    return None if checks.positions(NON_DIFFERENTIABLE) else "every tensor output is differentiable"


# The checks in report order, each a FunctionChecks method of the same name, with the reason it
# does not apply to a Function (None: it applies). The one list: CHECK_NAMES derives from it.
CHECKS: tuple[tuple[str, Callable[[FunctionChecks], str | None]], ...] = (
    ("forward", lambda c: None),
    ("reference_output", _needs_reference),
    ("gradcheck", _not_declared),
    ("backward_reference", lambda c: None if c.declared is not None else "no backward_reference given"),
    ("gradgradcheck", lambda c: ONCE if c.once else None),
    ("once_differentiable", lambda c: None if c.once else "backward is not @once_differentiable"),
    ("forward_ad", lambda c: None if defines(c.fn, "jvp") else "the Function defines no jvp"),
    ("vmap", lambda c: None if declares_vmap(c.fn) else "neither generate_vmap_rule nor vmap is declared"),
    ("reentrant", lambda c: None),
    ("grad_per_input", lambda c: None),
    ("non_differentiable", _has_non_differentiable_output),
    ("needs_input_grad", lambda c: None),
    ("compile", lambda c: None),
    ("reference_grad", lambda c: _needs_reference(c) or _not_declared(c)),
    ("reference_gradgrad", lambda c: _needs_reference(c) or _not_declared(c) or (ONCE if c.once else None)),
)
CHECK_NAMES = tuple(name for name, _ in CHECKS)


def check_function(fn: type[Function], inputs: tuple, *, reference: Callable | None = None,
                   backward_reference: Callable | None = None) -> FunctionReport:
    """Run every check that applies to `fn` on `inputs`; never raises for a failing Function.

    reference(*inputs) computes what forward claims to; backward_reference(inputs, grad_outputs)
    returns the gradient backward intends when it is not the derivative (a surrogate)."""
    if not (isinstance(fn, type) and issubclass(fn, Function)):
        raise TypeError(f"check_function needs a torch.autograd.Function subclass, not {fn!r}")
    if not isinstance(inputs, tuple):
        raise TypeError(f"inputs must be a tuple of forward's arguments, not {type(inputs).__name__}")
    checks = FunctionChecks(fn, inputs, reference, backward_reference)
    report = FunctionReport(fn.__name__)
    for name, does_not_apply in CHECKS:
        if report.checks and report.checks[0].verdict == "fail":
            report.checks.append(CheckResult(name, "skip", "forward failed"))
        elif reason := does_not_apply(checks):
            report.checks.append(CheckResult(name, "skip", reason))
        else:
            report.checks.append(run_check(name, getattr(checks, name)))
    return report


def assert_function_conforms(fn: type[Function], inputs: tuple, *, reference: Callable | None = None,
                             backward_reference: Callable | None = None) -> FunctionReport:
    """check_function, raising AssertionError with the report's table when a check fails."""
    report = check_function(fn, inputs, reference=reference, backward_reference=backward_reference)
    if not report.passed:
        raise AssertionError(f"\n{report}")
    return report


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """Verdict records for `torchsuite run`, one per check of each catalogued Function.

    A correct Function's record passes when its check did not fail. A deliberately flawed one
    gives records only for the checks its case expects to fail: each passes when it caught the
    flaw. The checks are fast either way, so quick changes nothing.
    """
    from suite.cases.functions import CASES

    for case in CASES:
        validate(f"function {case.name!r}", case.expect, CHECK_NAMES)
        # in a worker (suite.isolation), the verdict this becomes should its process die or hang
        if not announce(case.name, verdict_record("function", case.name, "completed", device=device, passed=False,
                                                  detail="", seconds=0.0)):
            continue
        inputs = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in case.inputs())
        report = check_function(case.function, inputs, reference=case.reference,
                                backward_reference=case.backward_reference)
        for result in report.checks:
            expected = expectation(case.expect, result.name)
            if expected is not None or not case.flawed:
                yield result_record("function", case.name, result, device, expected)
