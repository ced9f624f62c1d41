"""Compiled against eager, per machine and model, shown only where the compile check passed.

A speedup of a compiled model means nothing when the compiled model computes something else,
so a row's speedup appears only when the same run's compile check of that model, backend,
mode and device passed (suite.conformance.compile: check_compile against float64 eager). A
failing check shows its verdict in the speedup's place; a run without the check says so.
Eager is the one-process setup at all cores (threads_setting "all"), the compile setups'
own thread count.
"""
from __future__ import annotations

import pandas as pd

from suite.timing.setups import COMPILE_SETUPS, DEFAULT_COMPILE_BACKEND, SETUP_DEVICE

COLUMNS = ["machine", "model", "mode", "device", "eager samples/s", "compiled samples/s",
           "compiled speedup", "compile cold (s)", "compile warm (s)", "compile check"]


def _verdict(verdicts: list[dict], model: str, backend: str, mode: str, device: str) -> dict | None:
    for v in verdicts:
        if (v.get("suite"), v.get("model"), v.get("backend"), v.get("mode"), v.get("device")) == \
                ("compile", model, backend, mode, device):
            return v
    return None


def _seconds(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "n/a"


def _flagged(row) -> str:
    flags = [f for f in (row.get("figure_flags") or ()) if f != "quick"]
    return f" ({', '.join(flags)})" if flags else ""


def table(loaded, long: pd.DataFrame) -> pd.DataFrame:
    """One row per compiled timing: eager and compiled throughput, speedup gated on the check."""
    if not len(long):
        return pd.DataFrame(columns=COLUMNS)
    compiled = long[long["setup"].isin(COMPILE_SETUPS)]
    rows = []
    for _, row in compiled.iterrows():
        eager_setup = SETUP_DEVICE[row["setup"]]
        eager = long[(long["machine"] == row["machine"]) & (long["model"] == row["model"])
                     & (long["mode"] == row["mode"]) & (long["setup"] == eager_setup)
                     & (long["batch_size"] == row["batch_size"]) & (long["dtype"] == row["dtype"])
                     & (long["threads_setting"] == row["threads_setting"])]
        backend = row.get("compile_backend") or DEFAULT_COMPILE_BACKEND
        # The verdicts of the run the timing came from: another file's may be older or newer.
        verdicts = [v for m in loaded if (m.machine_name, m.source) == (row["machine"], row["source"]) for v in m.verdicts]
        verdict = _verdict(verdicts, row["model"], backend, row["mode"], row["device"])
        eager_row = eager.iloc[-1] if len(eager) else None
        if verdict is None:
            speedup, check = "not shown", f"no {backend} compile check of this model in the run"
        elif verdict.get("compile_verdict") == "not_compiled":  # the "compiled" figure timed eager code
            speedup, check = "not shown", f"NOT COMPILED: {verdict.get('detail', '')}"
        elif not verdict.get("compile_passed", verdict.get("passed")):
            speedup, check = "not shown", f"FAILED: {verdict.get('detail', '')}"
        else:
            check = f"passed ({backend}, {verdict.get('graph_breaks', 'n/a')} graph breaks)"
            speedup = (f"{eager_row['median_s'] / row['median_s']:.3g}x" if eager_row is not None
                       else "no eager figure")
        rows.append({"machine": row["machine"], "model": row["model"], "mode": row["mode"], "device": row["device"],
                     "eager samples/s": f"{eager_row['throughput']:,.0f}{_flagged(eager_row)}" if eager_row is not None else "missing",
                     "compiled samples/s": f"{row['throughput']:,.0f}{_flagged(row)}",
                     "compiled speedup": speedup, "compile cold (s)": _seconds(row.get("compile_cold_s")),
                     "compile warm (s)": _seconds(row.get("compile_warm_s")), "compile check": check})
    return pd.DataFrame(rows, columns=COLUMNS)


TEXT = ("Speedup = eager median time per iteration / compiled median, both at all cores in the same run. "
        "It is shown only where the run's check_compile of that model, backend and mode passed (compiled "
        "against a float64 eager run); otherwise the check's verdict stands in its place. Compile cold: the "
        "first compiled step with an empty compile cache; warm: again over the cache it filled. The checks "
        "train small seeded batches (suite.cases.compile); the timings use the registry's batch sizes.")
