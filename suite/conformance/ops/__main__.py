"""`torchsuite ops` (also `python -m suite.conformance.ops`): check_ops from a shell, one line per verdict not as declared.

    torchsuite ops --ops add,nn.functional.gelu --dtypes float32,bfloat16 --samples 1
    torchsuite ops --list

The ops are checked in a worker process (suite.isolation): an op whose kernel kills its process
(a signal, abort(), an exit) or hangs past --case-timeout is a `crash` or `timeout` verdict naming
its op, dtype, sample and the signal, and a fresh worker judges the ops after it.

Exit status: 0 when every verdict is as declared, 1 when one is not (a crash included), 2 on bad
input (an unknown op, dtype or check, a device that is absent), with the error in one line.
"""
from __future__ import annotations

import argparse
import sys

from suite.errors import SuiteError

EXIT_NOT_AS_DECLARED, EXIT_USER_ERROR = 1, 2


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _check_in_worker(args):
    """check_ops's report, its cases run in a worker process that a crashing kernel cannot take
    this one with it; bad input raises SuiteError as check_ops does."""
    from suite.conformance.ops.check import OpsReport, validated
    from suite.conformance.ops.verdicts import from_record
    from suite.isolation import IsolatedWorker, TaskError, WorkerCrash

    validated(_names(args.ops), _names(args.dtypes), _names(args.checks), args.samples)  # before any process starts
    report = OpsReport(args.device)
    worker = IsolatedWorker(case_budget_s=args.case_timeout)
    try:
        for found in worker.run("suite.conformance.ops.verdicts:selected", _names(args.ops), args.device,
                                _names(args.dtypes), _names(args.checks), args.samples):
            report.verdicts.append(from_record(found))
    except TaskError as error:
        raise SuiteError(str(error)) if error.user_error else error
    except WorkerCrash as crash:  # before its first op: nothing to judge (its stderr says why)
        raise SuiteError(f"the worker process was lost before checking an op: {crash.detail}; "
                         f"{crash.stderr_tail.splitlines()[-1] if crash.stderr_tail else ''}") from None
    finally:
        worker.close()
    return report


def main(argv: list[str] | None = None, prog: str = "python -m suite.conformance.ops") -> int:
    from suite.cases.opinfo import CHECKS

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma-separated OpInfo names (default all of op_db)")
    parser.add_argument("--device", default="cpu", help="device to check (default cpu)")
    parser.add_argument("--dtypes", help="comma-separated dtypes (default float32, bfloat16, float16)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"comma-separated checks: {', '.join(CHECKS)} (default all; method, inplace and out "
                             "call the op's other forms where OpInfo declares them)")
    parser.add_argument("--samples", type=int, default=None, help="most sample inputs per op (default all)")
    parser.add_argument("--case-timeout", type=float, default=None, metavar="S",
                        help="seconds one op, dtype and check may take before it is called hung "
                             "(default suite.conformance.ops.check.CASE_BUDGET_S)")
    parser.add_argument("--list", action="store_true", help="print op_db's names and exit")
    args = parser.parse_args(argv)
    try:
        from suite.cases.opinfo import cases
        from suite.devices import require_device

        if args.list:
            print("\n".join(case.name for case in cases()))
            return 0
        require_device(args.device.split(":")[0])
        report = _check_in_worker(args)
    except SuiteError as error:
        print(f"check_ops: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(report)
    return 0 if report.passed else EXIT_NOT_AS_DECLARED


if __name__ == "__main__":
    sys.exit(main())
