"""What a case is expected to do, and why: one type for every registry.

A case passes every check that applies to it unless it declares otherwise. What it declares
is a tuple of `Expect`, each naming the checks it concerns, the outcome and the reason, in
the manner of OpInfo's DecorateInfo (an exception to the rule, scoped to some tests, with
its reason beside it). The checkers judge a result against it, the tests parametrize from
it and the report prints it.

Outcomes:
- FAILS: the check must fail. A deliberately flawed Function the check must catch, a known
  limitation, or a defect of PyTorch the suite found. `cause`, when set, is the key of the
  cause the checker must itself diagnose (a parallel case's divergence, say); a failure for
  another cause is not the one expected.
- NOT_APPLICABLE: the check does not apply to the case (a first-order-only op has no second
  derivative); it is skipped, with `why` as the reason.
- APPROXIMATE: the check measures an error that is the finding; it is reported, not judged.
- NOT_COMPILED: the check compiles, and its backend must receive no graph (an `nn.LSTM` under
  dynamo's defaults runs eagerly): the check's verdict must be "not_compiled", neither pass nor
  fail, and a case that compiles after all is not as declared.
"""
from __future__ import annotations

from dataclasses import dataclass

FAILS, NOT_APPLICABLE, APPROXIMATE, NOT_COMPILED = "fails", "not_applicable", "approximate", "not_compiled"
OUTCOMES = (FAILS, NOT_APPLICABLE, APPROXIMATE, NOT_COMPILED)


@dataclass(frozen=True)
class Expect:
    outcome: str  # one of OUTCOMES
    why: str  # in words, for the report and the test's failure message
    checks: tuple[str, ...] = ()  # the checks it concerns; () means every check of the case
    cause: str = ""  # a cause the checker diagnoses itself, when it names one

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"an expected outcome is one of {OUTCOMES}, not {self.outcome!r}")
        if not self.why:
            raise ValueError(f"an expected {self.outcome} says why")

    def concerns(self, check: str) -> bool:
        return not self.checks or check in self.checks

    def __str__(self) -> str:
        scope = f" {', '.join(self.checks)}" if self.checks else ""
        cause = f" ({self.cause})" if self.cause else ""
        return f"{self.outcome.replace('_', ' ')}{scope}{cause}: {self.why}"


def fails(*checks: str, why: str, cause: str = "") -> Expect:
    return Expect(FAILS, why, checks, cause)


def not_applicable(*checks: str, why: str) -> Expect:
    return Expect(NOT_APPLICABLE, why, checks)


def approximate(*checks: str, why: str) -> Expect:
    return Expect(APPROXIMATE, why, checks)


def not_compiled(*checks: str, why: str) -> Expect:
    return Expect(NOT_COMPILED, why, checks)


def expectation(expect: tuple[Expect, ...], check: str) -> Expect | None:
    """What `expect` says about `check`: None means the check must pass."""
    concerned = [e for e in expect if e.concerns(check)]
    if len(concerned) > 1:
        raise ValueError(f"check {check!r} has {len(concerned)} expectations: {'; '.join(map(str, concerned))}")
    return concerned[0] if concerned else None


def outcome(expect: tuple[Expect, ...], check: str) -> str:
    """The expected outcome of `check`: "passes", or one of OUTCOMES."""
    found = expectation(expect, check)
    return found.outcome if found else "passes"


def checks_with(expect: tuple[Expect, ...], outcome_: str) -> tuple[str, ...]:
    """The checks `expect` names with outcome `outcome_`, in declaration order."""
    return tuple(c for e in expect if e.outcome == outcome_ for c in e.checks)


def describe(expect: tuple[Expect, ...]) -> str:
    return "; ".join(map(str, expect)) if expect else "passes every check"


def validate(name: str, expect: tuple[Expect, ...], known_checks) -> None:
    """Raise when `expect` names a check the case does not have, or is not a tuple of Expect."""
    if not isinstance(expect, tuple) or not all(isinstance(e, Expect) for e in expect):
        raise TypeError(f"{name}: expect must be a tuple of Expect, got {expect!r}")
    unknown = sorted({c for e in expect for c in e.checks} - set(known_checks))
    if unknown:
        raise ValueError(f"{name}: unknown checks {unknown}; checks: {', '.join(known_checks)}")
