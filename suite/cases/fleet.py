"""Which machines of a fleet are off: the diagnosis rules of `torchsuite report` over many machines, as data.

suite.report.fleet applies them to a results store (suite.report.store) or to the files it is
given. A machine is compared with the other machines of its *cohort*, the machines that ran the
same stack (STACK); a machine on another torch, driver or suite version is grouped apart, never
called an outlier of a fleet it does not belong to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from suite.cases.registry import Registry

# More machines than this and `torchsuite report` writes the fleet page: distributions across machines
# instead of a column each.
FLEET_MACHINES = 12
# The environment fields that make a cohort: machines that differ in any of them are compared apart.
STACK = ("torch", "cuda", "gpu_driver", "suite_version")
# A cohort smaller than this is listed, not diagnosed: a median of four machines names no outlier.
MIN_COHORT = 8
# 1.4826 x the median absolute deviation estimates a normal distribution's standard deviation.
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class FleetRule:
    """A machine breaks a figure rule when its figure lies beyond `robust_z` robust standard deviations
    (MAD_TO_SD x MAD of the figures' logarithms across the cohort) from the cohort's median AND at
    least `min_fraction` away from it: the second keeps a fleet of near-identical machines (a tiny
    MAD) from calling a 2% difference off. A verdict rule names a machine whose verdict differs from
    at least `majority` of its cohort."""
    kind: ClassVar[str] = "fleet_rule"
    name: str
    table: str  # the store's table it reads (suite.report.store.TABLES)
    says: str  # the reason, in words, for the report
    robust_z: float = 5.0
    min_fraction: float = 0.10
    majority: float = 0.5

    def describe(self) -> str:
        if self.table == "verdicts":
            return f"{self.says} (a verdict unlike more than {self.majority:.0%} of its cohort's)"
        return (f"{self.says} (beyond {self.robust_z:g} robust standard deviations and "
                f"{self.min_fraction:.0%} from its cohort's median)")


RULES = (
    FleetRule("limit", "limits", "a limit of the machine (GEMM, memory bandwidth, launch latency, collectives) is off"),
    FleetRule("figure", "timings", "a timed figure is off"),
    FleetRule("verdict", "verdicts", "a conformance verdict differs from the fleet's"),
)

CASES: Registry[FleetRule] = Registry("fleet_rule")
for _rule in RULES:
    CASES.add(_rule)
