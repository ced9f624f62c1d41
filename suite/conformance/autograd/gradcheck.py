"""gradcheck and its helpers, shared by the op, model and custom-Function checks.

Why float64: gradcheck compares autograd's Jacobian with central finite differences
(f(x + eps) - f(x - eps)) / 2 eps. With eps = 1e-6 the difference of two nearby values loses
about six digits to cancellation; float64's sixteen leave ten, float32's seven leave one, so
in float32 the comparison is noise. Every check here therefore runs on float64 samples.

Tolerances (gradcheck's defaults, kept on purpose so a failure here is a failure there):
eps 1e-6, atol 1e-5, rtol 1e-3; nondeterminism tolerance 0 on the CPU and 1e-12 on other
devices (see nondeterminism_tolerance). The jvp/vjp agreement
<J v, u> == <v, J^T u> compares two analytical results, so it is tight: rtol 1e-9, atol 1e-12.

Full mode builds the whole Jacobian column by column; fast mode (Chen et al.'s trick that
gradcheck implements) compares one random projection u^T J v, which costs one backward and
two forwards per input and so scales to models with a million parameters.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager

import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.autograd.gradcheck import GradcheckError

from suite.conformance.autograd.jacobians import (bind, forward_jacobians, largest_gap, numerical_jacobians,
                                                  reverse_jacobians)
from suite.conformance.result import CheckResult, run_check
from suite.errors import one_line

GRADCHECK_TOLERANCES = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}
JVP_VJP_RTOL, JVP_VJP_ATOL = 1e-9, 1e-12
ACCELERATOR_NONDET_TOL = 1e-12


def nondeterminism_tolerance(tensors) -> float:
    """How far two runs of one backward may differ. 0 on the CPU, whose kernels are deterministic.
    On an accelerator some backwards (scatter_add, index_put_ with accumulate, embedding) add in
    float64 with atomics in whatever order threads finish: about 1e-16 relative, far below any
    real error such as the noise of a non-deterministic backward."""
    on_cpu = all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))
    return 0.0 if on_cpu else ACCELERATOR_NONDET_TOL


@contextmanager
def no_slow_mode_replay():
    """On a mismatch, gradcheck's fast mode replays the check in slow mode only to print the full
    Jacobians: 2.4 million forwards for the MNIST net. This skips that replay (a private hook,
    patched only where it exists); the error still carries the fast-mode projections."""
    module = importlib.import_module("torch.autograd.gradcheck")
    name = "_run_slow_mode_and_get_error"
    original = getattr(module, name, None)
    if original is None:
        yield
        return
    setattr(module, name, lambda *args, **kwargs: "(full Jacobians not computed: fast mode)")
    try:
        yield
    finally:
        setattr(module, name, original)


def gradcheck_error_detail(error: GradcheckError) -> str:
    """gradcheck's first line, plus fast mode's projections u^T J v when the message has them."""
    head = one_line(error)
    lines = str(error).splitlines()
    values = {k: line.split(":", 1)[1].strip() for line in lines for k in ("numerical", "analytical")
              if line.startswith(k + ":")}
    if len(values) == 2 and all(len(v) < 60 for v in values.values()):
        return f"{head}; projection u^T J v: numerical {values['numerical']}, analytical {values['analytical']}"
    return head


def _gap_detail(error: GradcheckError, fn, args, mode: str) -> str:
    """gradcheck's own first line, plus the worst element (small inputs only)."""
    head = gradcheck_error_detail(error)
    f, diff, positions = bind(fn, args)
    if sum(x.numel() for x in diff) > 400:
        return head
    try:
        numerical = numerical_jacobians(f, diff, GRADCHECK_TOLERANCES["eps"])
        analytical = (forward_jacobians if mode == "forward" else reverse_jacobians)(f, diff)
        return f"{head}; {largest_gap(numerical, analytical, positions, actual_name=mode + ' mode')}"
    except Exception:  # the detail is a courtesy; the verdict stands without it
        return head


def gradcheck_result(name: str, fn, args, *, fast_mode: bool, **flags) -> CheckResult:
    """gradcheck (or gradgradcheck when name == "gradgradcheck") as a CheckResult."""
    def body():
        try:
            tolerances = {**GRADCHECK_TOLERANCES, "nondet_tol": nondeterminism_tolerance(args)}
            with no_slow_mode_replay():
                if name == "gradgradcheck":
                    gradgradcheck(fn, args, fast_mode=fast_mode, **tolerances, **flags)
                else:
                    gradcheck(fn, args, fast_mode=fast_mode, **tolerances, **flags)
        except GradcheckError as error:
            if name == "gradgradcheck":
                return "fail", gradcheck_error_detail(error)
            mode = "forward" if flags.get("check_backward_ad") is False else "reverse"
            return "fail", _gap_detail(error, fn, args, mode)
        return "pass", f"{'fast' if fast_mode else 'full'} mode"
    return run_check(name, body)


def jvp_vjp_result(fn, args, seed: int = 0) -> CheckResult:
    """Forward and reverse mode agree: <J v, u> == <v, J^T u> for random v, u."""
    def body():
        f, primals, _ = bind(fn, args)
        primals = tuple(p.detach() for p in primals)
        g = torch.Generator().manual_seed(seed)
        tangents = tuple(torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in primals)
        outs, jv = torch.func.jvp(f, primals, tangents)
        cotangents = tuple(torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device) for o in outs)
        _, vjp_fn = torch.func.vjp(f, *primals)
        jtu = vjp_fn(cotangents)
        forward = sum(float((a * b).sum()) for a, b in zip(jv, cotangents))
        reverse = sum(float((a * b).sum()) for a, b in zip(tangents, jtu))
        gap = abs(forward - reverse)
        detail = f"<Jv,u> = {forward:.12g}, <v,J^T u> = {reverse:.12g}, gap {gap:.3g}"
        ok = gap <= JVP_VJP_ATOL + JVP_VJP_RTOL * max(abs(forward), abs(reverse))
        return ("pass" if ok else "fail"), detail
    return run_check("jvp_vjp", body)


def on_device(args: tuple, device: str) -> tuple:
    """The samples (made on the CPU, so a seed gives the same values everywhere) moved to device."""
    if device == "cpu":
        return args
    return tuple(a.detach().to(device).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)
