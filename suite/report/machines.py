"""Per-machine facts of a report: environments side by side, conformance verdicts, peaks."""
from __future__ import annotations

import numpy as np
import pandas as pd


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
    if not rows:
        empty = pd.DataFrame(columns=["machine", "passed", "failed", "total"])
        return empty, pd.DataFrame()
    frame = pd.DataFrame(rows)
    for column in ("suite", "case", "check", "device"):
        frame[column] = frame.get(column, pd.Series(dtype=object)).fillna("").astype(str)
    frame["passed"] = frame["passed"].astype(bool)
    # Two runs of one machine: the later file's verdict stands, as for timings.
    frame = frame.drop_duplicates(subset=["machine", "suite", "case", "check", "device"], keep="last")
    summary = frame.groupby("machine")["passed"].agg(passed="sum", total="size").reindex(
        [m for m in machines if m in set(frame["machine"])])
    summary["failed"] = summary["total"] - summary["passed"]
    frame["verdict"] = np.where(frame["passed"], "pass", "FAIL")
    detail = frame.pivot_table(index=["suite", "case", "check", "device"], columns="machine",
                               values="verdict", aggfunc="first").reindex(columns=machines)
    detail = detail.astype(object).where(detail.notna(), "missing")  # a machine that did not run the check
    return summary.reset_index()[["machine", "passed", "failed", "total"]], detail


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


def _size(record: dict) -> str:
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
                         "variant": r.get("variant"), "size": _size(r),
                         "value": f"{value:.4g}" if isinstance(value, (int, float)) else "n/a",
                         "unit": r.get("unit", ""), "flags": ", ".join(r.get("flags") or []),
                         "_size": r.get("size") or 0}
    frame = pd.DataFrame(list(rows.values()), columns=[*LIMIT_COLUMNS, "_size"])
    return frame.drop(columns=["_size"])
