"""Closeness of two tensors, the one rule every checker uses: torch.testing.assert_close.

Its tolerances default per dtype (float32: rtol 1.3e-6, atol 1e-5; float64: 1e-7, 1e-7) and its
message already names the worst element; `mismatch` returns that message as one line.
"""
from __future__ import annotations

import torch

# torch.testing.assert_close's defaults per dtype, named here so reports can state them.
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float16: (1e-3, 1e-5),
}


def tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) that "equal up to rounding" means for `dtype`; exact for non-float dtypes."""
    return TOLERANCES.get(dtype, (0.0, 0.0))


def mismatch(actual: torch.Tensor, expected: torch.Tensor, *, rtol: float | None = None,
             atol: float | None = None) -> str | None:
    """None when close; else why not, in one line (shape, or the worst element and its gap).
    NaN never equals anything. Devices and dtypes may differ: values are what is compared."""
    if rtol is None or atol is None:
        rtol, atol = tolerances(expected.dtype)
    try:
        torch.testing.assert_close(actual.detach(), expected.detach(), rtol=rtol, atol=atol,
                                   check_device=False, check_dtype=False, check_layout=False)
    except AssertionError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return "; ".join(line for line in lines if line != "Tensor-likes are not close!")
    return None


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if not a.numel():
        return 0.0
    return (a.detach().double().to(b.device) - b.detach().double()).abs().max().item()
