"""Conformance checkers. Each source below yields verdict records for `torchsuite run`.

A source is "module:function" with signature `(device: str, quick: bool) -> Iterable[dict]`;
each dict is a verdict record (see suite/results.py): kind="conformance", suite, case, check,
device, passed, detail, seconds.
"""

VERDICT_SOURCES: list[str] = [
    "suite.conformance.ddp:verdicts",
    "suite.conformance.gradients:verdicts",
    "suite.conformance.function_check:verdicts",
]
