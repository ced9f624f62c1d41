"""Generated fleets: copies of one real results file, a machine each, with per-machine jitter and planted faults.

The template is the committed quick run `reports/runs/cpu-2core-...json` (778 records: timings,
the machine's limits, 732 verdicts). Each machine scales every figure by its own factor
(lognormal, JITTER) and each figure by another; PLANTED machines then get one fault each. Also
`python tests/fleets.py DIR N [--records R]` writes such a fleet to disk (the scale measurement
of docs/reports.md), its runs padded with repeated verdicts to about R records each.
"""
from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "reports" / "runs" / "cpu-2core-20261205T065824Z-2679.json"
JITTER = 0.015  # a machine's own speed, and each figure's, vary by this much (log standard deviation) between machines
TIMES = ("median_s", "ci95_low_s", "ci95_high_s", "iqr_s", "latency_p50_s", "latency_p90_s", "latency_p99_s")
RATES = ("throughput", "tokens_per_s", "achieved_flops_per_s")
FAILING_CHECK = ("ops", "exp", "forward float32")  # (suite, case, check) of the planted failing verdict

# machine index -> its fault, and the reason the fleet report must give for it
PLANTED = {
    3: ("gemm_low", "limit gemm"),
    7: ("all_reduce_low", "limit collectives all_reduce"),
    11: ("verdict_fails", "verdict ops | exp | forward float32"),
    17: ("other_torch", "torch 2.10.0"),
}


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def machine_name(index: int) -> str:
    return f"node-{index:04d}"


def _scale_time(record: dict, factor: float) -> None:
    for key in TIMES:
        if isinstance(record.get(key), (int, float)):
            record[key] *= factor
    if isinstance(record.get("samples"), list):
        record["samples"] = [s * factor if isinstance(s, (int, float)) else s for s in record["samples"]]
    for key in RATES:
        if isinstance(record.get(key), (int, float)):
            record[key] /= factor


def _scale_rate(record: dict, factor: float) -> None:
    for key in ("value", "busbw", "algbw"):
        if isinstance(record.get(key), (int, float)):
            record[key] *= factor


def machine(base: dict, index: int, seed: int = 0, fault: str | None = None, records: int | None = None) -> dict:
    """The template as machine `index` of a fleet: its own name, jitter and (optionally) fault."""
    rng = random.Random(seed * 100_003 + index)
    data = copy.deepcopy(base)
    data["machine"]["name"] = machine_name(index)
    data["started_at"] = f"2026-12-01T{index // 3600 % 24:02d}:{index // 60 % 60:02d}:{index % 60:02d}Z"
    speed = rng.lognormvariate(0, JITTER)
    for record in data["records"]:
        if record.get("kind") == "timing":
            _scale_time(record, speed * rng.lognormvariate(0, JITTER))
        elif record.get("kind") == "limit":
            factor = rng.lognormvariate(0, JITTER)
            _scale_rate(record, 1 / factor if record.get("unit") in ("us", "s") else factor / speed)
    if fault == "gemm_low":
        for record in data["records"]:
            if record.get("limit") == "gemm":
                _scale_rate(record, 0.85)
    elif fault == "all_reduce_low":
        for record in data["records"]:
            if record.get("limit") == "collectives" and record.get("variant") == "all_reduce":
                _scale_rate(record, 0.60)
    elif fault == "verdict_fails":
        for record in data["records"]:
            if (record.get("suite"), record.get("case"), record.get("check")) == FAILING_CHECK:
                record.update(passed=False, detail="planted: max abs error 0.5 > allowed 1e-05")
    elif fault == "other_torch":
        data["machine"]["torch"] = "2.10.0"
    if records:
        verdicts = [r for r in base["records"] if r.get("kind") == "conformance"]
        extra, copy_index = records - len(data["records"]), 0
        while extra > 0:
            for record in verdicts[:extra]:
                data["records"].append({**record, "case": f"{record.get('case')}#{copy_index}"})
            extra -= len(verdicts)
            copy_index += 1
    return data


def fleet(count: int, seed: int = 0, planted: dict = PLANTED, records: int | None = None):
    """(name, results dict) of each machine of a generated fleet."""
    base = template()
    for index in range(count):
        fault = planted.get(index, (None,))[0]
        yield machine_name(index), machine(base, index, seed, fault, records)


def write_fleet(directory, count: int, seed: int = 0, planted: dict = PLANTED, records: int | None = None) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in fleet(count, seed, planted, records):
        path = directory / f"{name}.json"
        path.write_text(json.dumps(data))
        paths.append(path)
    return paths


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("machines", type=int)
    parser.add_argument("--records", type=int, default=None, help="pad each run to about this many records")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    written = write_fleet(options.directory, options.machines, options.seed, records=options.records)
    print(f"{len(written)} results files in {options.directory}", file=sys.stderr)
