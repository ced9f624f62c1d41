"""Gradient checks of the registered ops (suite/cases/ops.py), each returning a CheckResult."""
from __future__ import annotations

from suite.cases.expect import expectation
from suite.cases.ops import OpCase
from suite.conformance.autograd.gradcheck import gradcheck_result, jvp_vjp_result, on_device
from suite.conformance.result import CheckResult
from suite.errors import one_line


def check_op(case: OpCase, check: str, *, fast_mode: bool = False, seed: int = 0, device: str = "cpu",
             honour_expect: bool = True) -> CheckResult:
    """One check of one op on its seeded float64 samples. A check declared not to apply is a skip."""
    declared = expectation(case.expect, check)
    if honour_expect and declared is not None:
        return CheckResult(check, "skip", declared.why)
    try:
        args = on_device(case.samples(seed), device)
    except Exception as error:
        return CheckResult(check, "fail", f"samples: raised {one_line(error)}")
    if check in ("gradcheck", "gradgradcheck"):
        return gradcheck_result(check, case.op, args, fast_mode=fast_mode)
    if check == "forward_ad":
        return gradcheck_result(check, case.op, args, fast_mode=fast_mode, check_forward_ad=True,
                                check_backward_ad=False, check_undefined_grad=False)
    if check == "batched_grad":
        return gradcheck_result(check, case.op, args, fast_mode=fast_mode, check_batched_grad=True)
    if check == "jvp_vjp":
        return jvp_vjp_result(case.op, args, seed)
    raise ValueError(f"unknown op check {check!r}")
