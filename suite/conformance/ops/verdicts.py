"""The op sweep's verdict records for `torchsuite run`: every op of OpInfo's op_db on the device.

quick: one sample input per op of a representative subset (suite.cases.opinfo.QUICK_OPS, about
70 ops), in float32 and bfloat16, the function's forward and backward (294 records): about 9 s on
a 2-core CPU, where all of op_db at one sample takes 12 to 30 s, a large share of a quick run's
minute. The method, in-place and out= forms would add 256 records, each a rewrite of the
results file, for a second of checks: they are the full run's.
Full: every sample input OpInfo gives, in every checked dtype the op supports on the device
(float32, bfloat16 and float16), every check (CHECKS).
"""
from __future__ import annotations

from typing import Iterator

from suite.cases.opinfo import CHECKED_DTYPES, CHECKS, QUICK_OPS, cases
from suite.conformance.ops.check import OpVerdict, iter_verdicts
from suite.conformance.result import verdict_record

SUITE = "ops"
QUICK_DTYPES = ("float32", "bfloat16")
QUICK_SAMPLES = 1
QUICK_CHECKS = ("forward", "backward")


def record(verdict: OpVerdict, device: str) -> dict:
    """An op verdict as a results record: check is "<check> <dtype>", so that one op's verdicts
    stay apart in the report's tables; the fields of OpVerdict ride along."""
    return verdict_record(SUITE, verdict.case, f"{verdict.check} {verdict.dtype}", device=device,
                          passed=verdict.passed, detail=verdict.detail, seconds=verdict.seconds,
                          op=verdict.op, variant=verdict.variant, dtype=verdict.dtype,
                          outcome=verdict.outcome, expected=verdict.expected, error=verdict.error,
                          element_error=verdict.element_error,
                          max_abs=verdict.max_abs, sample=verdict.sample, tolerance=verdict.tolerance)


def from_record(found: dict) -> OpVerdict:
    """The OpVerdict a record (`record`'s, or a worker's crash record made from it) stands for."""
    fields = {name: found.get(name) for name in OpVerdict.__dataclass_fields__ if name in found}
    return OpVerdict(**{**fields, "check": found["check"].split(" ")[0], "sample": found.get("sample") or "",
                        "detail": found.get("detail") or "", "tolerance": found.get("tolerance") or "",
                        "seconds": found.get("seconds") or 0.0})


def _records(selected, device: str, dtypes, checks, samples: int | None) -> Iterator[dict]:
    for verdict in iter_verdicts(selected, device, dtypes, checks, samples, pending=lambda v: record(v, device)):
        yield record(verdict, device)


def verdicts(device: str, quick: bool) -> Iterator[dict]:
    import torch

    dtypes = tuple(getattr(torch, d) for d in QUICK_DTYPES) if quick else CHECKED_DTYPES
    yield from _records(cases(QUICK_OPS if quick else None), device, dtypes, QUICK_CHECKS if quick else CHECKS,
                        QUICK_SAMPLES if quick else None)


def selected(ops: list[str] | None, device: str, dtypes: list[str] | None, checks: list[str],
             samples: int | None) -> Iterator[dict]:
    """`torchsuite ops`'s selection as records, for a worker (suite.isolation); bad names raise
    SuiteError before any case, as check_ops does."""
    from suite.conformance.ops.check import validated

    chosen, wanted, checks = validated(ops, dtypes, checks, samples)
    yield from _records(chosen, device, wanted, checks, samples)
