"""The declared compile cases (suite.cases.compile): each checked, and judged against its expectation."""
from __future__ import annotations

import time
from typing import Iterator

import torch

from suite.cases.expect import FAILS, NOT_COMPILED, expectation, outcome
from suite.conformance.compile.check import RAISES, CompileReport, check_compile
from suite.conformance.result import meets, verdict_record
from suite.isolation import case as announce

CASE_BUDGET_S = 900.0  # a cold inductor compile of a model and its optimizer takes 10 to 25 s on 2 cores


def check_case(case, device: str = "cpu") -> CompileReport:
    from suite.cases.compile import without_onednn

    inputs, targets = case.data()
    return check_compile(case.model, inputs, targets, loss_fn=case.loss, optimizer_fn=case.optimizer,
                         backend=case.backend, steps=case.steps, mode=case.mode, device=device,
                         inductor_config=case.inductor_config or None, dynamo_config=case.dynamo_config or None,
                         context_fn=None if case.onednn else without_onednn, compile_parts=case.compile_parts,
                         compile_mode=case.compile_mode, seed=case.seed)


def judge(case, report: CompileReport) -> tuple[bool, str]:
    """Whether the report is what the case declares (verdict and graph breaks), in one line."""
    expected = expectation(case.expect, "equivalence")
    ok = meets(expected, failed=report.verdict == "fail", cause=report.cause,
               not_compiled=report.verdict == NOT_COMPILED)
    if expected is not None and expected.outcome == FAILS and not expected.cause:
        ok = ok and not report.error  # an expected difference is in the values, not a backend that crashed
    breaks_ok = report.graph_breaks == case.graph_breaks or report.error is not None  # uncounted when it raised
    expectation_ = "equivalent" if expected is None else {
        NOT_COMPILED: f"not compiled ({expected.why})",
        FAILS: f"to {'raise' if expected.cause == RAISES else 'differ'} ({expected.why})"}.get(expected.outcome, "")
    breaks = "" if breaks_ok else f"; expected {case.graph_breaks} graph break(s), counted {report.graph_breaks}"
    return ok and breaks_ok, f"{'as' if ok and breaks_ok else 'NOT as'} expected {expectation_}: {report.summary()}{breaks}"


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """One verdict per declared compile case (quick: the aot_eager ones, seconds in all)."""
    from suite.cases.compile import CASES

    for case in CASES:
        if (quick and not case.quick) or not case.in_run or (case.devices and torch.device(device).type not in case.devices):
            continue
        identity = dict(model=case.model_name or None, backend=case.backend, mode=case.mode,
                        expected=outcome(case.expect, "equivalence"))
        # in a worker (suite.isolation), the verdict this becomes should its process die or hang
        if not announce(case.name, verdict_record("compile", case.name, "equivalence", device=device, passed=False,
                                                  detail="", seconds=0.0, **identity), CASE_BUDGET_S):
            continue
        start = time.perf_counter()
        report = check_case(case, device)
        passed, detail = judge(case, report)
        yield verdict_record("compile", case.name, "equivalence", device=device, passed=passed, detail=detail,
                             seconds=time.perf_counter() - start, **identity, compile_passed=report.passed, compile_verdict=report.verdict,
                             graph_breaks=report.graph_breaks, graphs_compiled=report.graphs_compiled,
                             recompiles=len(report.recompiles), batch_sizes=report.batch_sizes,
                             compile_s=report.compile_s)
