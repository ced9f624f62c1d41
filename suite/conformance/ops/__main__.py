"""`torchsuite ops` (also `python -m suite.conformance.ops`): check_ops from a shell, one line per verdict not as declared.

    torchsuite ops --ops add,nn.functional.gelu --dtypes float32,bfloat16 --samples 1
    torchsuite ops --list

Exit status: 0 when every verdict is as declared, 1 when one is not, 2 on bad input (an unknown
op, dtype or check, a device that is absent), with the error in one line.
"""
from __future__ import annotations

import argparse
import sys

from suite.errors import SuiteError

EXIT_NOT_AS_DECLARED, EXIT_USER_ERROR = 1, 2


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def main(argv: list[str] | None = None, prog: str = "python -m suite.conformance.ops") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma-separated OpInfo names (default all of op_db)")
    parser.add_argument("--device", default="cpu", help="device to check (default cpu)")
    parser.add_argument("--dtypes", help="comma-separated dtypes (default float32, bfloat16, float16)")
    parser.add_argument("--checks", default="forward,backward", help="forward, backward or both (default)")
    parser.add_argument("--samples", type=int, default=None, help="most sample inputs per op (default all)")
    parser.add_argument("--list", action="store_true", help="print op_db's names and exit")
    args = parser.parse_args(argv)
    try:
        from suite.cases.opinfo import cases
        from suite.conformance.ops.check import check_ops
        from suite.devices import require_device

        if args.list:
            print("\n".join(case.name for case in cases()))
            return 0
        require_device(args.device.split(":")[0])
        report = check_ops(_names(args.ops), device=args.device, dtypes=_names(args.dtypes),
                           checks=_names(args.checks), samples=args.samples)
    except SuiteError as error:
        print(f"check_ops: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(report)
    return 0 if report.passed else EXIT_NOT_AS_DECLARED


if __name__ == "__main__":
    sys.exit(main())
