"""How an op's output in a dtype is judged against its float64 reference.

Each element passes when |actual - reference| <= atol + rtol * |reference| (assert_close's rule),
with
- rtol: the dtype's own in torch.testing.assert_close (float32 1.3e-6, bfloat16 1.6e-2,
  float16 1e-3), or the op's own from OpInfo when it declares a looser one;
- atol: the dtype's assert_close atol (1e-5), or the op's own when looser.
`scaled` (declared per op, check and dtype: suite.cases.opinfo.SCALED) adds rtol times the largest
finite magnitude of the reference tensor to every element's allowance: the rounding a
low-precision computation makes at the scale of its own output. A sum whose terms cancel, or a
gradient computed from a rounded output, loses digits in its small elements however well it is
computed, and only there is an element judged by the output's scale instead of its own.
NaN must meet NaN and an infinity the same infinity; a reference beyond the dtype's largest
finite value is met by the infinity of its sign (what rounding it to the dtype gives). Integer and
boolean outputs (indices, masks) must be equal. The error reported is the worst element's
|actual - reference| / allowed: above 1 it fails, and the report gives it with the sample that
gave it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_leaves

DEFAULT_TOLERANCES = {  # dtype: (rtol, atol), torch.testing.assert_close's defaults
    torch.float32: (1.3e-6, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float16: (1e-3, 1e-5),
}


def tolerances(dtype: torch.dtype, declared: tuple[float, float] | None = None) -> tuple[float, float]:
    """(rtol, atol) for `dtype`: its default, loosened (never tightened) by the op's declared one."""
    rtol, atol = DEFAULT_TOLERANCES[dtype]
    if declared is not None:
        rtol, atol = max(rtol, declared[0]), max(atol, declared[1])
    return rtol, atol


@dataclass(frozen=True)
class Comparison:
    error: float  # the worst element's |difference| / allowed; 0 when equal; inf when shapes etc. differ
    max_abs: float  # the largest |difference| over the outputs
    detail: str  # where it was worst, in words
    element_error: float = 0.0  # the same under each element's own tolerance (equal to error unless scaled)

    @property
    def passed(self) -> bool:
        return self.error <= 1.0


def _leaves(value) -> list:
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, (torch.Tensor, bool, int, float, complex))]


def compare(actual, reference, rtol: float, atol: float, scaled: bool = False) -> Comparison:
    """Every output of `actual` against `reference` (same structure), as the module says."""
    got, want = _leaves(actual), _leaves(reference)
    if len(got) != len(want):
        return Comparison(float("inf"), float("inf"), f"{len(got)} outputs where the reference has {len(want)}")
    worst = Comparison(0.0, 0.0, "equal")
    for index, (a, r) in enumerate(zip(got, want)):
        one = _compare_one(torch.as_tensor(a).detach().cpu(), torch.as_tensor(r).detach().cpu(), rtol, atol, scaled)
        where = f"output {index}: " if len(got) > 1 else ""
        element_error = max(worst.element_error, one.element_error)
        if one.error > worst.error:
            worst = Comparison(one.error, max(worst.max_abs, one.max_abs), where + one.detail, element_error)
        else:
            worst = Comparison(worst.error, max(worst.max_abs, one.max_abs), worst.detail, element_error)
    return worst


def _compare_one(a: torch.Tensor, r: torch.Tensor, rtol: float, atol: float, scaled: bool) -> Comparison:
    a, r = (t.to_dense() if t.layout != torch.strided else t for t in (a, r))
    if a.shape != r.shape:
        return Comparison(float("inf"), float("inf"), f"shape {tuple(a.shape)}, reference {tuple(r.shape)}")
    if a.numel() == 0:
        return Comparison(0.0, 0.0, "empty")
    exact = not (r.is_floating_point() or r.is_complex()) or not (a.is_floating_point() or a.is_complex())
    if exact:
        differ = a.to(r.dtype) != r if a.dtype != torch.bool or r.dtype == torch.bool else a != r.bool()
        count = int(differ.sum())
        return Comparison(float("inf") if count else 0.0, float(count > 0),
                          f"{count} of {a.numel()} elements differ (exact)" if count else "equal",
                          float("inf") if count else 0.0)
    low = a.dtype
    wide = torch.complex128 if r.is_complex() or a.is_complex() else torch.float64
    a, r = a.to(wide), r.to(wide)
    if low.is_floating_point and not r.is_complex():
        # beyond the dtype's largest finite value an infinity of the same sign is the right answer
        big = torch.finfo(low).max
        r = torch.where(r.abs() > big, r.sign() * float("inf"), r)
    finite = torch.isfinite(r)
    diff = (a - r).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    # a NaN or an infinity in the reference is met only by the same value
    special_met = (a == r) | (torch.isnan(a) & torch.isnan(r))

    def ratios(allowed: torch.Tensor) -> torch.Tensor:
        return torch.where(finite, diff / allowed.where(finite, torch.ones_like(allowed)),
                           torch.where(special_met, torch.zeros_like(diff), torch.full_like(diff, float("inf"))))

    own = atol + rtol * r.abs()
    element_error = ratios(own).max().item()
    allowed = own + rtol * r[finite].abs().max().item() if scaled and bool(finite.any()) else own
    ratio = ratios(allowed)
    flat = int(ratio.flatten().argmax())
    error = ratio.flatten()[flat].item()
    max_abs = diff[finite].max().item() if bool(finite.any()) else 0.0
    index = _unravel(flat, ratio.shape)
    detail = (f"at {index}: {_number(a.flatten()[flat])} against {_number(r.flatten()[flat])} "
              f"(allowed difference {allowed.flatten()[flat].item():.3g})")
    return Comparison(error, max_abs, detail, element_error)


def _unravel(flat: int, shape: torch.Size) -> list[int]:
    """torch.unravel_index's answer for one index, without its tensor ops (11 s of a full op sweep)."""
    index = []
    for size in reversed(shape):
        flat, at = divmod(flat, size)
        index.append(at)
    return index[::-1]


def _number(value: torch.Tensor) -> str:
    value = value.item()
    return f"{value:.6g}" if not isinstance(value, complex) else f"{value.real:.6g}{value.imag:+.6g}j"
