"""The declared compile cases (suite.cases.compile): each checked, and judged against its expectation."""
from __future__ import annotations

import time
from typing import Iterator

from suite.conformance.compile.check import CompileReport, check_compile


def check_case(case, device: str = "cpu") -> CompileReport:
    inputs, targets = case.data()
    return check_compile(case.model, inputs, targets, loss_fn=case.loss, optimizer_fn=case.optimizer,
                         backend=case.backend, steps=case.steps, train=case.train, device=device,
                         inductor_config=case.inductor_config or None, seed=case.seed)


def judge(case, report: CompileReport) -> tuple[bool, str]:
    """Whether the report is what the case declares (verdict and graph breaks), in one line."""
    if case.expected == "equivalent":
        ok = report.passed
    else:  # divergent: the values differ, and not because the backend crashed
        ok = not report.passed and report.error is None
    breaks_ok = report.graph_breaks == case.graph_breaks
    expectation = case.expected + (f" ({case.expected_reason})" if case.expected_reason else "")
    breaks = "" if breaks_ok else f"; expected {case.graph_breaks} graph break(s), counted {report.graph_breaks}"
    return ok and breaks_ok, f"{'as' if ok and breaks_ok else 'NOT as'} expected {expectation}: {report.summary()}{breaks}"


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """One verdict per declared compile case (quick: the aot_eager ones, seconds in all)."""
    from suite.cases.compile import CASES

    for case in CASES:
        if quick and not case.quick:
            continue
        start = time.perf_counter()
        report = check_case(case, device)
        passed, detail = judge(case, report)
        yield {"kind": "conformance", "suite": "compile", "case": case.name, "check": "equivalence",
               "device": device, "passed": passed, "detail": detail, "seconds": time.perf_counter() - start,
               "model": case.article_model or None, "backend": case.backend, "mode": case.mode,
               "expected": case.expected, "compile_passed": report.passed, "graph_breaks": report.graph_breaks,
               "compile_s": report.compile_s}


verdicts.estimated_s = (5.0, 60.0)  # (quick, full) on 2 cores: inductor compiles dominate the full run (20 s warm)
