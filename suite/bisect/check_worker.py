"""Runs one check in this fresh interpreter and prints its outcome as one JSON line.

Started by suite.bisect.check as `python -c BOOT <this file> <request>`, in the code under
test's directory (first on sys.path): so this runner is this checkout's while the code it checks
is the commit's, its own `suite` package included when it has one (a registered check of the
suite's own history). Free of the suite's imports for that reason; suite/target.py is loaded by
its path. The request, JSON: {"check": SELECTOR, "device": "cpu"|"cuda"}. The answer, on the
last line of stdout (the check's own prints go to stderr):

    {"outcome": "pass" | "fail" | "absent", "detail": "one line"}

`absent`: nothing to run (no such module, function or registered check) at this commit.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import traceback
from pathlib import Path

DETAIL_LIMIT = 300


def _target_module():
    path = Path(__file__).resolve().parents[1] / "target.py"
    spec = importlib.util.spec_from_file_location("_torchsuite_target", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return message[:DETAIL_LIMIT]


def run_function(selector: str) -> tuple[str, str]:
    """A user's function: it passes when it returns without raising, and what it returns is not
    False and has no false `.passed` (a suite report object's verdict)."""
    target = _target_module()
    try:
        function = target.load_target(selector)
    except target.TargetNotFound as err:
        return "absent", str(err)
    except Exception as err:  # the module is there and raises on import: its code is broken
        return "fail", f"importing it raised {one_line(err)}"
    try:
        value = function()
    except Exception as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        return "fail", f"raised {one_line(err)} ({Path(frame.filename).name}:{frame.lineno})"
    passed = getattr(value, "passed", value is not False)
    return ("pass" if passed else "fail"), (str(value)[:DETAIL_LIMIT] if value is not None else "")


def run_registered(selector: str, device: str) -> tuple[str, str]:
    """SUITE/CASE[/CHECK]: the verdict records `torchsuite run` makes (full settings) whose suite,
    case and check match; it passes when every one passed (as its case declares)."""
    from suite.conformance.sources import VERDICT_SOURCES

    suite_name, case, *rest = selector.split("/", 2)
    check = rest[0] if rest else None
    # Only the sources whose module names the suite (autograd, function, compile); the others,
    # all of them, only for a suite no module names (ddp, fsdp: suite.conformance.parallel).
    sources = [s for s in VERDICT_SOURCES if suite_name in s.name] or VERDICT_SOURCES
    matched, seen = [], set()
    for source in sources:
        for record in source.verdicts(device, False):
            seen.add(f"{record['suite']}/{record['case']}")
            if (record["suite"], record["case"]) == (suite_name, case) and check in (None, record["check"]):
                matched.append(record)
            elif matched:
                break  # a case's records come together: the check's are all in
        if matched:
            break
    if not matched:
        return "absent", f"no registered check {selector!r} among {len(seen)} cases (torchsuite list)"
    failed = [r for r in matched if not r["passed"]]
    if failed:
        return "fail", "; ".join(f"{r['check']}: {r['detail']}" for r in failed)[:DETAIL_LIMIT]
    return "pass", f"{len(matched)} checks passed"


def main(argv: list[str]) -> int:
    protocol, sys.stdout = sys.stdout, sys.stderr
    request = json.loads(argv[0])
    selector = request["check"]
    if ":" in selector:
        outcome, detail = run_function(selector)
    else:
        outcome, detail = run_registered(selector, request.get("device", "cpu"))
    protocol.write(json.dumps({"outcome": outcome, "detail": detail}) + "\n")
    protocol.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
