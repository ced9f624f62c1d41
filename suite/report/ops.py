"""The report's sections on OpInfo's ops (suite.conformance.ops): outcomes per machine, device and
dtype; the verdicts that are not as declared; with several machines, the verdicts that differ.

Op verdicts are conformance records of suite "ops" whose `check` is "<check> <dtype>" and which
carry `outcome` (pass, fail, crash, expected_failure, unexpected_pass, skip).
"""
from __future__ import annotations

import pandas as pd

SUITE = "ops"
OUTCOMES = ("pass", "fail", "crash", "expected_failure", "unexpected_pass", "approximate", "skip")
KEY = ["case", "check", "device"]

COUNTS_TEXT = (
    "Each of OpInfo's ops (op_db) in each dtype its device supports, against float64 on the CPU: "
    "forward (the op's outputs) and backward (a vector-Jacobian product). Expected failures and "
    "skips are OpInfo's own declarations (or the suite's, suite/cases/opinfo.py); an unexpected "
    "pass is a declared failure that did not fail; a crash is an op that raised. Tolerances and "
    "how to read a failure: docs/ops.md.")
NOT_AS_DECLARED_TEXT = (
    "Fail, crash and unexpected pass: error is the worst element's difference over the allowed "
    "one (above 1 fails), on the sample named.")
DIFFER_TEXT = ("The outcome of each op verdict on each machine, where machines that ran it disagree "
               "(missing: not run on that machine, for instance a quick run against a full one).")


def frame(loaded) -> pd.DataFrame:
    """Every op verdict of every machine, the later file's standing where one machine has two."""
    rows = [{"machine": m.machine_name, **v} for m in loaded for v in m.verdicts if v.get("suite") == SUITE]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    for column in ("case", "check", "device", "dtype", "outcome", "detail", "sample"):
        table[column] = table.get(column, pd.Series(dtype=object)).fillna("").astype(str)
    return table.drop_duplicates(subset=["machine", *KEY], keep="last")


def counts(table: pd.DataFrame) -> pd.DataFrame:
    """Outcomes per machine, device and dtype: how many verdicts of each."""
    grouped = table.groupby(["machine", "device", "dtype", "outcome"], sort=False).size().unstack(fill_value=0)
    grouped = grouped.reindex(columns=list(OUTCOMES), fill_value=0)
    grouped["ops"] = table.groupby(["machine", "device", "dtype"], sort=False)["case"].nunique()
    return grouped.reset_index().rename(columns=lambda c: c.replace("_", " "))


def not_as_declared(table: pd.DataFrame) -> pd.DataFrame:
    bad = table[~table["passed"].astype(bool)]
    columns = ["machine", "device", "case", "check", "outcome", "error", "detail", "sample"]
    return bad.reindex(columns=columns).rename(columns={"case": "op"})


def differing(table: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    """(op, check, device) rows whose outcome is not the same on every machine that ran them."""
    pivot = table.pivot_table(index=KEY, columns="machine", values="outcome", aggfunc="first")
    pivot = pivot.reindex(columns=[m for m in machines if m in pivot.columns])
    ran = pivot.apply(lambda row: row.dropna().nunique() > 1, axis=1)
    shown = pivot[ran].astype(object)
    shown = shown.where(shown.notna(), "missing")
    return shown.rename_axis(columns=None).reset_index().rename(columns={"case": "op"})


def sections(loaded, machines: list[str]) -> list[dict]:
    """The op sections, as dicts of render.Section's fields; none when no file has op verdicts."""
    table = frame(loaded)
    if not len(table):
        return []
    bad = not_as_declared(table)
    out = [{"title": "Ops (OpInfo): outcomes per device and dtype", "text": COUNTS_TEXT, "table": counts(table)},
           {"title": "Ops not as declared", "text": NOT_AS_DECLARED_TEXT if len(bad) else
            "None: every op verdict is as OpInfo and the suite declare.", "table": bad if len(bad) else None}]
    if len(set(table["machine"])) > 1:
        differ = differing(table, machines)
        out.append({"title": "Ops whose verdicts differ between machines",
                    "text": DIFFER_TEXT if len(differ) else "None: every op verdict is the same on every machine.",
                    "table": differ if len(differ) else None})
    return out
