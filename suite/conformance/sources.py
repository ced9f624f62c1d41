"""The conformance sources `torchsuite run` consumes, registered by import in this one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from suite.conformance.autograd.verdicts import verdicts as autograd_verdicts
from suite.conformance.compile.declared import verdicts as compile_verdicts
from suite.conformance.functions.check import verdicts as function_verdicts
from suite.conformance.ops.verdicts import verdicts as op_verdicts
from suite.conformance.parallel.equivalence import verdicts as ddp_verdicts
from suite.conformance.parallel.resume import verdicts as resume_verdicts

DEFAULT_ESTIMATE_S = (10.0, 30.0)


@dataclass(frozen=True)
class VerdictSource:
    """A producer of verdict records (suite.conformance.result.verdict_record) for one device."""

    verdicts: Callable[[str, bool], Iterable[dict]]  # (device, quick) -> verdict records
    estimated_s: tuple[float, float] = DEFAULT_ESTIMATE_S  # (quick, full) seconds on 2 cores, for --dry-run
    uses_worker_pool: bool = False  # the run starts the pool's fork server early for it
    short_name: str = ""  # what `torchsuite run --checks` calls it

    @property
    def name(self) -> str:
        return f"{self.verdicts.__module__}:{self.verdicts.__qualname__}"


VERDICT_SOURCES = [
    # full estimates as measured in a cold full run here (docs/run.md, "Where the time goes")
    VerdictSource(ddp_verdicts, (4.0, 17.0), uses_worker_pool=True, short_name="parallel"),
    VerdictSource(resume_verdicts, (1.0, 10.0), uses_worker_pool=True, short_name="resume"),  # DCP save and resume: 0.5 s quick in a run, 8 s full (2 and 4 ranks)
    # The pools' sources first, sharing the pools; the rest may run two at a time (suite.runner.execute)
    VerdictSource(autograd_verdicts, (4.0, 40.0), short_name="autograd"),  # full: the workloads' minis add about 28 s
    VerdictSource(function_verdicts, (5.0, 5.0), short_name="functions"),  # quick changes nothing
    # two batch sizes a case; inductor compiles dominate the full run (Adam under inductor 10 to 25 s),
    # and the standard workloads' minis under aot_eager add about 60 s; 222-245 s beside the op sweep
    VerdictSource(compile_verdicts, (9.0, 240.0), short_name="compile"),
    # OpInfo's op_db: quick, 70 ops at one sample (3 s); full, all of it in three dtypes (99 s alone
    # on a 2-core VM, cold caches; 157 s beside the compile checks, which then took 245 s)
    VerdictSource(op_verdicts, (4.0, 150.0), short_name="ops"),
]


def select_sources(names: list[str] | None) -> list[VerdictSource]:
    """The sources `torchsuite run --checks` names, in the run's order (None: every one); an unknown
    name raises UnknownCaseError listing the known ones."""
    from suite.errors import UnknownCaseError

    if names is None:
        return list(VERDICT_SOURCES)
    known = [source.short_name for source in VERDICT_SOURCES]
    for name in names:
        if name not in known:
            raise UnknownCaseError("check source", name, known)
    return [source for source in VERDICT_SOURCES if source.short_name in names]
