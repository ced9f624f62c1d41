"""The conformance sources `torchsuite run` consumes, registered by import in this one place.

A source is a function `(device: str, quick: bool) -> Iterable[dict]` of verdict records:
kind="conformance", suite, case, check, device, passed, detail, seconds. It may declare
`uses_worker_pool = True` (the run starts the pool's fork server early) and
`estimated_s = (quick, full)` seconds for `torchsuite run --dry-run`.
"""
from suite.conformance.autograd.verdicts import verdicts as autograd_verdicts
from suite.conformance.compile.declared import verdicts as compile_verdicts
from suite.conformance.functions.check import verdicts as function_verdicts
from suite.conformance.parallel.equivalence import verdicts as ddp_verdicts

VERDICT_SOURCES = [ddp_verdicts, autograd_verdicts, function_verdicts, compile_verdicts]
