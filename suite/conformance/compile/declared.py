"""The declared compile cases (suite.cases.compile): each checked, and judged against its expectation."""
from __future__ import annotations

import time
from typing import Iterator

from suite.cases.expect import expectation, outcome
from suite.conformance.compile.check import CompileReport, check_compile
from suite.conformance.result import meets, verdict_record


def check_case(case, device: str = "cpu") -> CompileReport:
    inputs, targets = case.data()
    return check_compile(case.model, inputs, targets, loss_fn=case.loss, optimizer_fn=case.optimizer,
                         backend=case.backend, steps=case.steps, mode=case.mode, device=device,
                         inductor_config=case.inductor_config or None, seed=case.seed)


def judge(case, report: CompileReport) -> tuple[bool, str]:
    """Whether the report is what the case declares (verdict and graph breaks), in one line."""
    expected = expectation(case.expect, "equivalence")
    # an expected difference is in the values, not a backend that crashed
    ok = meets(expected, failed=not report.passed) and not (expected and report.error)
    breaks_ok = report.graph_breaks == case.graph_breaks
    expectation_ = f"to differ ({expected.why})" if expected else "equivalent"
    breaks = "" if breaks_ok else f"; expected {case.graph_breaks} graph break(s), counted {report.graph_breaks}"
    return ok and breaks_ok, f"{'as' if ok and breaks_ok else 'NOT as'} expected {expectation_}: {report.summary()}{breaks}"


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """One verdict per declared compile case (quick: the aot_eager ones, seconds in all)."""
    from suite.cases.compile import CASES

    for case in CASES:
        if quick and not case.quick:
            continue
        start = time.perf_counter()
        report = check_case(case, device)
        passed, detail = judge(case, report)
        yield verdict_record("compile", case.name, "equivalence", device=device, passed=passed, detail=detail,
                             seconds=time.perf_counter() - start, model=case.article_model or None,
                             backend=case.backend, mode=case.mode, expected=outcome(case.expect, "equivalence"),
                             compile_passed=report.passed, graph_breaks=report.graph_breaks,
                             compile_s=report.compile_s)
