"""gradcheck of every registered model, in float64, w.r.t. its input and its parameters.

The model becomes a pure function of (input, *parameters) through torch.func.functional_call,
so gradcheck perturbs parameters exactly as it perturbs the input. Batch 2 keeps it to seconds.

Two checks per model:
- `gradcheck_fast`: fast mode over the input and *every* parameter. Fast mode compares one
  random projection u^T J v (two forwards and one backward per tensor), so the MNIST net's
  1.2M parameters cost about a second; full mode would need 2.4M forwards.
- `gradcheck_full_subset`: full mode (every Jacobian entry) over every layer's bias and the
  first layer's weight. Each bias column exercises its layer's whole backward path for the
  batch, the first weight exercises the convolution's weight-gradient kernel, and together
  they stay under 700 columns; the large weights are covered by the fast-mode projection.

Kinks. relu and max_pool2d are not differentiable where a relu input is 0 or a pooling window
has a tie; a finite difference that straddles such a point measures a different linear piece
and fails for no fault of autograd. With ~10^5 relu units some input is always within 1e-5
of zero, so seeding alone cannot keep every unit away. Instead a TorchFunctionMode records
which side of every kink each forward evaluation lands on; if a failing gradcheck had any
evaluation on another side than the base point, the result is inconclusive and the check
moves to the next seed (at most MAX_SEEDS). A genuine error fails at every seed.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from suite.cases.expect import NOT_APPLICABLE, expectation
from suite.cases.models import CASES as MODELS, ModelSpec, article_models, standard_models
from suite.cases.registry import Check, check_names
from suite.conformance.autograd.gradcheck import (GRADCHECK_TOLERANCES, gradcheck_error_detail,
                                                  no_slow_mode_replay, nondeterminism_tolerance)
from suite.conformance.result import CheckResult, run_check

BATCH = 2
MAX_SEEDS = 3
MODEL_CHECK_KINDS = (Check("gradcheck_fast", quick=True), Check("gradcheck_full_subset"))
MODEL_CHECKS = check_names(MODEL_CHECK_KINDS)


class KinkRecorder(TorchFunctionMode):
    """Records, for every relu and max_pool2d call, which linear piece the input falls on."""

    def __init__(self):
        super().__init__()
        self.pieces: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.relu:
            self.pieces.append(args[0].detach() > 0)
        elif func is F.max_pool2d:
            pool_args = {k: v for k, v in kwargs.items() if k != "return_indices"}
            self.pieces.append(F.max_pool2d(args[0].detach(), *args[1:], return_indices=True, **pool_args)[1])
        return func(*args, **kwargs)

    def crossed(self, calls_per_forward: int) -> bool:
        """True when a later evaluation landed on another piece than the first (base) one."""
        base = self.pieces[:calls_per_forward]
        return any(not torch.equal(p, base[i % calls_per_forward])
                   for i, p in enumerate(self.pieces[calls_per_forward:]))


def full_subset_names(model: torch.nn.Module) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    return [n for n in names if n.endswith("bias") or n == names[0]]


def _model_function(spec: ModelSpec, device: str):
    model = spec.build(seed=0).to(device=device, dtype=torch.float64)
    params = {n: p.detach() for n, p in model.named_parameters()}
    return model, params


def _gradcheck_model(spec: ModelSpec, subset: list[str] | None, fast_mode: bool, device: str):
    """(verdict, detail): gradcheck over the input (unless it is token ids) and the named
    parameters, kink-guarded."""
    model, params = _model_function(spec, device)
    names = subset if subset is not None else list(params)
    include_input = subset is None and spec.input_dtype.is_floating_point
    notes = []
    for seed in range(MAX_SEEDS):
        x = spec.example_batch(BATCH, seed=seed)[0].to(device)
        x = x.to(torch.float64) if x.is_floating_point() else x
        leaves = ([x.requires_grad_()] if include_input else []) + [params[n].clone().requires_grad_() for n in names]

        def f(*tensors):
            inp = tensors[0] if include_input else x.detach()
            given = dict(zip(names, tensors[1:] if include_input else tensors))
            return functional_call(model, {**params, **given}, (inp,))

        recorder = KinkRecorder()
        with recorder:
            f(*leaves)
        calls = len(recorder.pieces)
        try:
            with recorder, no_slow_mode_replay():
                torch.autograd.gradcheck(f, tuple(leaves), fast_mode=fast_mode, **GRADCHECK_TOLERANCES,
                                         nondet_tol=nondeterminism_tolerance(leaves))
        except GradcheckError as error:
            if calls and recorder.crossed(calls):
                notes.append(f"seed {seed} inconclusive (a finite difference crossed a relu/max_pool kink)")
                continue
            return "fail", f"seed {seed}: {gradcheck_error_detail(error)}"
        what = ("input and all" if include_input else "all parameters'" if subset is None else "subset of") + \
            f" {sum(t.numel() for t in leaves):,} elements"
        return "pass", "; ".join(notes + [f"seed {seed}, {'fast' if fast_mode else 'full'} mode, {what}"])
    return "fail", "; ".join(notes) + f"; no seed of {MAX_SEEDS} kept every finite difference off the kinks"


def check_model(spec: ModelSpec, check: str, *, device: str = "cpu") -> CheckResult:
    if check == "gradcheck_fast":
        return run_check(check, lambda: _gradcheck_model(spec, None, True, device))
    if check == "gradcheck_full_subset":
        model = spec.build(seed=0)
        return run_check(check, lambda: _gradcheck_model(spec, full_subset_names(model), False, device))
    raise ValueError(f"unknown model check {check!r}")


# The standard workloads' mini configs: the fast check only, outside quick runs (1 to 10 s each in
# float64 here; full mode over their first weight alone would take hours).
WORKLOAD_CHECK_KINDS = (Check("gradcheck_fast"),)


def model_results(*, device: str = "cpu", quick: bool = False,
                  names: list[str] | None = None) -> Iterator[tuple[str, CheckResult]]:
    """The article's models, then the standard workloads' mini configs (not their full sizes), or
    the models `names`; a check a model declares not applicable is a skip with its reason."""
    for spec in MODELS.select(names or article_models() + standard_models("mini")):
        kinds = MODEL_CHECK_KINDS if spec.family == "article" else WORKLOAD_CHECK_KINDS
        for check in check_names(kinds, quick):
            declared = expectation(spec.expect, check)
            if declared is not None and declared.outcome == NOT_APPLICABLE:
                yield spec.name, CheckResult(check, "skip", f"not applicable: {declared.why}")
            else:
                yield spec.name, check_model(spec, check, device=device)
