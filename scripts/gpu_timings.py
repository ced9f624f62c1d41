"""Time every registered model on the GPU(s) and write one JSON file: records, skips, peaks.

Used by scripts/gpu_check.sh; runs on its own too:
    python scripts/gpu_timings.py --out gpu-results/gpu_timings.json [--quick]
Exit status 2, with one line on stderr, when there is no CUDA GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="the core's quick settings")
    args = parser.parse_args(argv)

    from suite.devices import require_device
    from suite.environment import capture
    from suite.errors import SuiteError, one_line
    from suite.results import write_json_atomically
    from suite.timing import attach_scaling_efficiency, calibrate_peak, iter_setups

    try:
        require_device("cuda")
    except SuiteError as error:
        print(f"gpu_timings: error: {error}", file=sys.stderr)
        return 2

    started = time.time()
    calibrations = [calibrate_peak("cuda", dtype, quick=args.quick)
                    for dtype in ("float32", "tfloat32", "bfloat16")]
    records, skipped, failed = [], [], []
    for case in iter_setups(["cuda"], quick=args.quick):
        if case.skip_reason:
            skipped.append({"case": case.id, "reason": case.skip_reason})
            continue
        try:
            record = case.time()
        except Exception as error:  # keep going: one failing case must not hide the others
            failed.append({"case": case.id, "error": one_line(error)})
            print(f"FAILED {case.id}: {one_line(error)}", flush=True)
            continue
        records.append(record)
        print(f"{case.id:<60} {record['median_s'] * 1e3:9.3f} ms  {record['throughput']:12.0f} samples/s"
              f"  {record['peak_fraction']:6.1%} of peak  {' '.join(record['flags'])}", flush=True)
    attach_scaling_efficiency(records)

    result = {"environment": capture(), "calibrations": calibrations, "records": records,
              "skipped": skipped, "failed": failed, "wall_s": time.time() - started}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomically(args.out, result)  # a reader never sees half a file
    print(f"{len(records)} timed, {len(skipped)} skipped, {len(failed)} failed -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
