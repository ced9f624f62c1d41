"""Per-machine facts of a report: environments side by side, conformance verdicts, peaks."""
from __future__ import annotations

import numpy as np
import pandas as pd

from suite.isolation import LOST


def environments(loaded) -> pd.DataFrame:
    columns = {}
    for m in loaded:
        flat = {}
        _flatten(m.environment, "", flat)
        flat["results file"] = m.source
        flat["run status"] = m.status
        columns.setdefault(m.machine_name, {}).update(flat)
    table = pd.DataFrame(columns)
    return table.fillna("n/a")


def _flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "cpu_info":
                continue  # lscpu's full text: too long for a side-by-side table, kept in the results file
            _flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}", out)
    elif isinstance(value, list):
        out[prefix] = ", ".join(_flat_text(v) for v in value) or "none"
    elif prefix.endswith("memory_bytes") and isinstance(value, (int, float)):
        out[prefix] = f"{value / 2**30:.1f} GiB"
    else:
        out[prefix] = "n/a" if value is None else str(value)


def _flat_text(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v / 2**30:.1f}GiB" if k.endswith("memory_bytes") else f"{k}={v}"
                        for k, v in value.items())
    return str(value)


def conformance(loaded, machines: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per machine, every check with its verdict per machine, 'missing' where not run)."""
    rows = [{"machine": m.machine_name, **v} for m in loaded for v in m.verdicts]
    rows += [{"machine": m.machine_name, "suite": e.get("stage", "run"), "case": e.get("step", "?"),
              "check": "completed without error", "device": e.get("device", ""), "passed": False,
              "detail": e.get("detail", "")} for m in loaded for e in m.errors]
    rows += [{"machine": m.machine_name, "suite": c.get("stage", "run"), "case": crash_subject(c),
              "check": "completed without crashing", "device": c.get("device", ""), "passed": False,
              "outcome": c.get("outcome", "crash"), "detail": c.get("detail", "")} for m in loaded for c in m.crashes]
    if not rows:
        empty = pd.DataFrame(columns=["machine", "passed", "failed", "crashed", "total"])
        return empty, pd.DataFrame()
    frame = pd.DataFrame(rows)
    for column in ("suite", "case", "check", "device"):
        frame[column] = frame.get(column, pd.Series(dtype=object)).fillna("").astype(str)
    frame["passed"] = frame["passed"].astype(bool)
    # Two runs of one machine: the later file's verdict stands, as for timings.
    frame = frame.drop_duplicates(subset=["machine", "suite", "case", "check", "device"], keep="last")
    # A case whose process died, hung or ran out of memory is counted apart from a wrong answer.
    outcome = frame["outcome"].astype(str) if "outcome" in frame else pd.Series("", index=frame.index)
    frame["crashed"] = ~frame["passed"] & outcome.isin(LOST)
    summary = frame.groupby("machine").agg(passed=("passed", "sum"), crashed=("crashed", "sum"),
                                           total=("passed", "size")).reindex(
        [m for m in machines if m in set(frame["machine"])])
    summary["failed"] = summary["total"] - summary["passed"] - summary["crashed"]
    frame["verdict"] = np.where(frame["passed"], "pass", np.where(frame["crashed"], outcome.str.upper(), "FAIL"))
    detail = frame.pivot_table(index=["suite", "case", "check", "device"], columns="machine",
                               values="verdict", aggfunc="first").reindex(columns=machines)
    detail = detail.astype(object).where(detail.notna(), "missing")  # a machine that did not run the check
    return summary.reset_index()[["machine", "passed", "failed", "crashed", "total"]], detail


def crash_subject(record: dict) -> str:
    """What a crash record was running: a figure, a model's seed, a limit, or the step."""
    if record.get("figure"):
        return f"{record['figure']} (process {record['process']})" if record.get("process") else record["figure"]
    if record.get("seed") is not None:
        return f"{record.get('model')} seed {record['seed']}"
    return record.get("limit") or record.get("step") or "?"


def crashes(loaded) -> pd.DataFrame:
    """Every case, figure or step whose process died, hung or ran out of memory."""
    rows = [{"machine": m.machine_name, "what": f"{v.get('suite', '')} {v.get('case', '')} {v.get('check', '')}".strip(),
             "outcome": v.get("outcome"), "detail": v.get("detail", "")}
            for m in loaded for v in m.verdicts if not v.get("passed") and v.get("outcome") in LOST]
    rows += [{"machine": m.machine_name, "what": f"{c.get('stage', '')} {crash_subject(c)}".strip(),
              "outcome": c.get("outcome", "crash"), "detail": c.get("detail", "")} for m in loaded for c in m.crashes]
    return pd.DataFrame(rows, columns=["machine", "what", "outcome", "detail"])


PEAK_COLUMNS = ["machine", "device", "device_name", "dtype", "threads", "matmul_size", "GFLOP/s", "iqr_fraction",
                "noisy"]


def peaks(loaded) -> pd.DataFrame:
    """Each calibrated matmul peak, in GFLOP/s; the full calibration stays in the results file."""
    rows = []
    for m in loaded:
        for p in m.peaks:
            flops = p.get("flops_per_s")
            rows.append({"machine": m.machine_name, **p,
                         "GFLOP/s": round(flops / 1e9, 1) if isinstance(flops, (int, float)) else None})
    return pd.DataFrame(rows).reindex(columns=PEAK_COLUMNS) if rows else pd.DataFrame(columns=PEAK_COLUMNS)


LIMIT_COLUMNS = ["machine", "device", "limit", "variant", "size", "value", "unit", "flags"]
LIMITS_TEXT = ("Measured by the timing core on each machine (suite.timing.limits; docs/limits.md). gemm: the "
               "best n x n matmul of the sweep; memory_bandwidth: STREAM copy and triad over buffers beyond the "
               "last-level cache; launch_latency: one tiny op; collectives: nccl-tests' busbw over 2 ranks at the "
               "largest size measured (algbw and every size are in the results file). A flag says to repeat the "
               "figure before trusting it.")


def limit_size(record: dict) -> str:
    size = record.get("size")
    if not isinstance(size, (int, float)) or record.get("limit") in ("gemm", "launch_latency"):
        return "" if size is None else str(size)
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def limits(loaded) -> pd.DataFrame:
    """The machine-limits table: one row per machine, device, limit and variant (collectives at their
    largest size); a later file's record of the same row stands."""
    rows: dict[tuple, dict] = {}
    for m in loaded:
        for r in m.limits:
            key = (m.machine_name, r.get("device"), r.get("limit"), r.get("variant"))
            if r.get("limit") == "collectives" and key in rows and (r.get("size") or 0) < rows[key]["_size"]:
                continue
            value = r.get("value")
            rows[key] = {"machine": m.machine_name, "device": r.get("device"), "limit": r.get("limit"),
                         "variant": r.get("variant"), "size": limit_size(r),
                         "value": f"{value:.4g}" if isinstance(value, (int, float)) else "n/a",
                         "unit": r.get("unit", ""), "flags": ", ".join(r.get("flags") or []),
                         "_size": r.get("size") or 0}
    frame = pd.DataFrame(list(rows.values()), columns=[*LIMIT_COLUMNS, "_size"])
    return frame.drop(columns=["_size"])
