"""The autograd checks' verdict records for `torchsuite run`: every registered op, then every model."""
from __future__ import annotations

from typing import Iterator

from suite.cases.ops import CASES as OPS
from suite.conformance.autograd.models import model_results
from suite.conformance.autograd.ops import check_op
from suite.conformance.result import result_record, verdict_record
from suite.isolation import case as announce


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    """Verdict records for `torchsuite run`: every op, then every registered model.

    Samples are made in float64 on the CPU and moved to `device`. quick=True runs fast mode and
    only the checks declared quick (suite.cases.ops, suite.conformance.autograd.models).
    """
    for case in OPS:
        for check in case.checks(quick):
            # in a worker (suite.isolation), the verdict this becomes should its process die or hang
            pending = verdict_record("autograd", case.name, check, device=device, passed=False, detail="", seconds=0.0)
            if not announce(f"{case.name} {check}", pending):
                continue
            yield result_record("autograd", case.name, check_op(case, check, fast_mode=quick, device=device), device)
    for result_case, result in model_results(device=device, quick=quick):
        yield result_record("autograd", result_case, result, device)
