"""Every case the suite knows, declared once as data.

Each module here holds one registry (`CASES`) of one kind; tests, benchmarks, asv, the CLI
and the report all read cases from here and declare none of their own.
"""
from __future__ import annotations

import importlib

from suite.cases.registry import Registry
from suite.errors import UnknownCaseError

# kind -> module under suite.cases whose CASES registry holds that kind.
_KIND_MODULES = {
    "model": "models",
    "defect": "defects",
    "op": "ops",
    "function": "functions",
    "torch_function": "torch_functions",  # torch's own Functions, with samples written here
    "parallel": "parallel",
    "resume": "resume",  # runs saved with torch.distributed.checkpoint and resumed
    "variant": "variants",
    "compile": "compile",
    "limit": "limits",  # the machine's limits: GEMM, memory bandwidth, launch latency, copies, collectives
    "fleet_rule": "fleet",  # which machines of a fleet are off (suite.report.fleet)
}


def kinds() -> list[str]:
    return list(_KIND_MODULES)


def registry(kind: str) -> Registry:
    if kind not in _KIND_MODULES:
        raise UnknownCaseError("case kind", kind, _KIND_MODULES)
    return importlib.import_module(f"suite.cases.{_KIND_MODULES[kind]}").CASES


def all_registries() -> dict[str, Registry]:
    return {kind: registry(kind) for kind in _KIND_MODULES}
