"""When is a compiled value the same as eager's? Judged against a float64 eager run.

Two float32 programs of one model never agree bit for bit once a compiler fuses, reorders or
vectorises a reduction, so comparing compiled against eager float32 alone cannot tell a
reordered sum from a wrong kernel. A float64 run of the same model from the same state is far
closer to the exact result than either, so it measures both programs' error:

    error(x)  = RMS(x - reference_float64)          per tensor
    passes   <=> error(compiled) <= ERROR_MULTIPLE * error(eager float32) + floor
    floor     = max(FLOOR_RTOL * RMS(reference_float64), FLOOR_ATOL)

ERROR_MULTIPLE = 3: a compiled program that only rounds differently makes errors of eager's
size, independent of eager's, so their ratio is about 1 and rarely beyond 2; 3 leaves room
without letting a real error through, which sits orders of magnitude above (a backward wrong
by 0.2% is 100x the bound). The floor is for tensors whose eager error is (near) zero or
tiny: 1e-5 of the tensor's own size is about 80 float32 units of roundoff. On the article's
small models eager float32 is within 1e-7 of float64, so the floor decides there: under
inductor, compiled's worst tensor reached 0.11 of the bound (docs/compile.md); the multiple
matters where eager's own error grows (long reductions, many steps).
RMS rather than the largest element: one element at the end of a long reduction can carry
several ulps without anything being wrong, while a wrong lowering moves many elements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ERROR_MULTIPLE = 3.0
FLOOR_RTOL = 1e-5
FLOOR_ATOL = 1e-8


def rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item() if t.numel() else 0.0


@dataclass(frozen=True)
class TensorError:
    """One tensor at one step: compiled's and eager's errors against float64, and the bound."""

    step: int  # 1-based training step
    tensor: str
    compiled: float
    eager: float
    bound: float
    scale: float  # RMS of the float64 reference
    note: str = ""  # why the values could not be compared (shape, dtype), when they could not

    @property
    def passed(self) -> bool:
        return not self.note and self.compiled <= self.bound  # NaN never passes

    @property
    def ratio(self) -> float:
        """compiled error / bound: above 1 fails; the worst tensor is the one with the largest."""
        if self.note or math.isnan(self.compiled):
            return math.inf
        if self.bound == 0:  # exact values (integer buffers): equal or infinitely wrong
            return 0.0 if self.compiled == 0 else math.inf
        return self.compiled / self.bound

    def describe(self) -> str:
        if self.note:
            return f"step {self.step}, {self.tensor}: {self.note}"
        return (f"step {self.step}, {self.tensor}: RMS error {self.compiled:.3g} vs bound {self.bound:.3g} "
                f"(eager float32's {self.eager:.3g}, size {self.scale:.3g})")


def compare_tensor(step: int, name: str, compiled: torch.Tensor, eager: torch.Tensor,
          reference: torch.Tensor) -> TensorError:
    """compiled and eager float32 values of one tensor against the float64 reference's."""
    if compiled.shape != reference.shape:
        return TensorError(step, name, math.inf, 0.0, 0.0, 0.0,
                           f"shape {tuple(compiled.shape)}, eager's {tuple(reference.shape)}")
    if not reference.is_floating_point():  # counters, indices: exact or wrong
        wrong = int((compiled.detach().cpu() != reference.detach().cpu()).sum())
        return TensorError(step, name, float(wrong), 0.0, 0.0, 0.0,
                           f"{wrong} of {reference.numel()} integer values differ" if wrong else "")
    ref = reference.detach().double()
    scale = rms(ref)
    eager_error = rms(eager.detach().double().to(ref.device) - ref)
    bound = ERROR_MULTIPLE * eager_error + max(FLOOR_RTOL * scale, FLOOR_ATOL)
    return TensorError(step, name, rms(compiled.detach().double().to(ref.device) - ref), eager_error,
                       bound, scale)


def rule_text() -> str:
    return (f"RMS error vs float64 eager <= {ERROR_MULTIPLE:g} x eager float32's "
            f"+ max({FLOOR_RTOL:g} x size, {FLOOR_ATOL:g})")
