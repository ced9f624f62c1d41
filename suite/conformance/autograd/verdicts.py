"""The autograd checks' verdict records for `torchsuite run`: every registered op, then every model."""
from __future__ import annotations

from typing import Iterator

from suite.cases.ops import CASES as OPS
from suite.conformance.autograd.models import model_results
from suite.conformance.autograd.ops import check_op
from suite.conformance.result import verdict_record


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """Verdict records for `torchsuite run`: every op, then every registered model.

    Samples are made in float64 on the CPU and moved to `device`. quick=True runs fast mode,
    only the first-order and jvp/vjp checks of ops, and the models' fast-mode check.
    """
    op_checks = ("gradcheck", "jvp_vjp") if quick else None
    for case in OPS:
        for check in op_checks or case.checks():
            result = check_op(case, check, fast_mode=quick, device=device)
            yield verdict_record("autograd", case.name, result, device)
    for result_case, result in model_results(device=device, quick=quick):
        yield verdict_record("autograd", result_case, result, device)


verdicts.estimated_s = (4.0, 12.0)  # (quick, full) seconds on 2 cores, for --dry-run
