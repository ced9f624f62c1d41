"""pandas tables of a report: the long table, the comparison against a baseline, pivots.

A row is identified by KEY (model, mode, device, setup, world_size, batch_size, dtype,
channels_last, threads_setting). threads_setting is "all" when a run used every core the
machine let it use, else the thread count: a 2-core and a 64-core machine compare at "all"
(each machine at full strength) and at the thread counts both measured. A key absent on some
machine becomes an explicit "missing" row.

Each row keeps its figure's flags (suite.timing.figure: noisy, contended, drift, few_samples,
throttled, quick) and is compared with the baseline's row for what makes two figures
comparable: quick or full settings, torch and CUDA versions, and the timing process's
settings (TF32, cuDNN, determinism). A difference is a flag on the row, never silent.

Every figure is shown with its 95% interval when its record has one (ci95_low_s, ci95_high_s:
the interval of the median, which suite.timing computes); pytest-benchmark and asv files have
none, and none is made up for them. Rates inherit it from the time: throughput runs from
global_batch / ci95_high_s to global_batch / ci95_low_s (INTERVAL_OF names each figure's bounds).

Speedup = baseline median_s / this median_s. Its interval is the ratio of both figures'
intervals, baseline ci95_low_s / this ci95_high_s to baseline ci95_high_s / this ci95_low_s:
it holds the true ratio whenever both figures' intervals hold theirs (for independent ones at
least 0.95^2 = 90% of the time, in practice more), and it carries whatever variance those
intervals carry (between processes, which a bootstrap of one process's samples cannot see). A speedup whose interval contains 1.0 is `within noise`: not distinguishable from
the baseline.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.errors import SuiteError, UnknownCaseError
from suite.timing.setups import ONE_DEVICE_SETUPS
from suite.timing.scaling import REFERENCE_SETUP, efficiency, reference_key
from suite.timing.stats import is_noisy

KEY = ["model", "mode", "device", "setup", "world_size", "batch_size", "dtype", "channels_last", "threads_setting"]
TIMING_COLUMNS = ["threads", "median_s", "ci95_low_s", "ci95_high_s", "iqr_s", "noisy", "throughput", "tokens_per_s",
                  "peak_mem_bytes", "flops", "achieved_flops_per_s", "peak_flops_per_s", "peak_fraction", "mfu",
                  "latency_p50_s", "latency_p90_s", "latency_p99_s"]
# What must match for two figures to be compared as like for like, and how a difference reads.
COMPARABILITY = {"quick": "quick vs full", "torch": "torch", "cuda": "CUDA", "settings_key": "settings"}
# Each shown figure's 95% interval: the record's own for the time, derived in comparison() for the rest.
RATES = ("throughput", "tokens_per_s", "peak_fraction", "mfu")  # per second: they follow the time's interval
INTERVAL_OF = {"median_s": ("ci95_low_s", "ci95_high_s"),
               **{rate: (f"{rate}_ci_low", f"{rate}_ci_high") for rate in RATES},
               "speedup": ("speedup_ci_low", "speedup_ci_high")}
WITHIN_NOISE = "within noise"  # the speedup table's word for an interval that contains 1.0
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


class EmptyResultsError(SuiteError):
    pass


def long_table(loaded) -> pd.DataFrame:
    """One row per timing of every machine; later files win over earlier ones for the same machine and key."""
    rows = [{"machine": m.machine_name, "source": m.source, **{k: v for k, v in t.items() if k != "flags"},
             "figure_flags": t.get("flags"), "threads_setting": threads_setting(t.get("threads"), m.environment)}
            for m in loaded for t in m.timings]
    extra = ["samples", "figure_flags", *COMPARABILITY]
    if not rows:
        return pd.DataFrame(columns=["machine", "source", *KEY, *TIMING_COLUMNS, *extra])
    table = pd.DataFrame(rows)
    for column in [*KEY, *TIMING_COLUMNS, *extra]:
        if column not in table:
            table[column] = None
    # One-device setups are world size 1 whatever the file says; elsewhere an unknown stays unknown.
    one_device = table["setup"].isin(ONE_DEVICE_SETUPS) | table["setup"].isna()
    table["world_size"] = pd.to_numeric(table["world_size"]).mask(one_device & table["world_size"].isna(), 1)
    table["world_size"] = table["world_size"].astype("Int64")
    table["batch_size"] = pd.to_numeric(table["batch_size"]).astype("Int64")
    for column in ("model", "mode", "device", "setup", "dtype"):
        table[column] = table[column].fillna("").astype(str)
    table["channels_last"] = table["channels_last"].fillna(False).astype(bool)
    numeric = [c for c in TIMING_COLUMNS if c != "noisy"]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    # Recomputed rather than trusted: files from other tools carry no flag, and the rule must be one.
    table["noisy"] = [is_noisy(iqr, median) if pd.notna(iqr) and pd.notna(median) else False
                      for iqr, median in zip(table["iqr_s"], table["median_s"])]
    table["figure_flags"] = [_figure_flags(flags, noisy) for flags, noisy in zip(table["figure_flags"], table["noisy"])]
    table["settings_key"] = [_settings_key(s) for s in table.pop("settings")] if "settings" in table else None
    if table["throughput"].isna().any():
        derived = table["batch_size"].astype("Float64") * table["world_size"].astype("Float64") / table["median_s"]
        table["throughput"] = table["throughput"].fillna(derived.astype(float))
    table["mfu"] = model_flops_utilisation(table, gemm_limits(loaded))
    table["figure_flags"] = [flags + (ABOVE_LIMIT,) if mfu > 1 else flags
                             for flags, mfu in zip(table["figure_flags"], table["mfu"].fillna(0))]
    return table.drop_duplicates(subset=["machine", *KEY], keep="last").reset_index(drop=True)


ABOVE_LIMIT = "above_gemm_limit"  # the report's flag: a figure's FLOP/s above the machine's GEMM limit


def gemm_limits(loaded) -> dict[tuple, tuple[float, int]]:
    """{(machine, device, dtype): (FLOP/s, threads)}: each machine's measured GEMM limit
    (suite.cases.limits "gemm"; one device's, per dtype)."""
    return {(m.machine_name, r.get("device"), r.get("variant")): (r["value"] * 1e9, r.get("threads"))
            for m in loaded for r in m.limits if r.get("limit") == "gemm" and isinstance(r.get("value"), (int, float))}


def model_flops_utilisation(table: pd.DataFrame, limits: dict) -> list:
    """Achieved FLOP/s over the GEMM limit of the figure's dtype, summed over the devices it used
    (MFU). None where the machine measured no such limit, or, on a CPU, measured it at another
    number of cores than the figure used: the limit at 2 cores is not the 1-thread one's."""
    out = []
    for row in table.itertuples():
        limit = limits.get((row.machine, row.device, row.dtype or "float32"))
        world = int(row.world_size) if pd.notna(row.world_size) else 1
        if limit is None or pd.isna(row.achieved_flops_per_s):
            out.append(None)
        elif row.device == "cuda":
            out.append(row.achieved_flops_per_s / (limit[0] * world))
        else:
            cores = row.threads * (world if row.setup == "cpu-ddp" else 1) if pd.notna(row.threads) else None
            out.append(row.achieved_flops_per_s / limit[0] if cores == limit[1] else None)
    return out


def _figure_flags(flags, noisy: bool) -> tuple:
    flags = [f for f in flags if isinstance(f, str)] if isinstance(flags, list) else []
    return tuple(dict.fromkeys([*flags, *(["noisy"] if noisy else [])]))


def _settings_key(settings) -> str | None:
    """The timing settings that change a figure, threads aside (those are part of the row's key)."""
    if not isinstance(settings, dict):
        return None
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if k != "threads")


def threads_setting(threads, environment: dict) -> str:
    cores = environment.get("usable_cores") or environment.get("cores")
    if threads is None or pd.isna(threads):
        return "all"  # formats that do not say ran with the default, every core
    return "all" if cores and int(threads) >= int(cores) else str(int(threads))


def machine_order(loaded) -> list[str]:
    return list(dict.fromkeys(m.machine_name for m in loaded))


def choose_baseline(loaded, baseline: str | None) -> str:
    machines = machine_order(loaded)
    if baseline is None:
        return machines[0]
    if baseline not in machines:
        raise UnknownCaseError("baseline machine", baseline, machines)
    return baseline


def median_ratio_interval(baseline_samples, samples, confidence: float) -> tuple[float, float]:
    """A bootstrap interval of median(baseline_samples) / median(samples): the regression gate's
    (suite.report.compare), over one process's raw samples."""
    a, b = as_samples(baseline_samples), as_samples(samples)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    med_a = np.median(a[rng.integers(0, len(a), (BOOTSTRAP_RESAMPLES, len(a)))], axis=1)
    med_b = np.median(b[rng.integers(0, len(b), (BOOTSTRAP_RESAMPLES, len(b)))], axis=1)
    tail = 50 * (1 - confidence)
    low, high = np.percentile(med_a / med_b, [tail, 100 - tail])
    return float(low), float(high)


def as_samples(samples) -> np.ndarray:
    if samples is None or (isinstance(samples, float) and math.isnan(samples)):
        return np.empty(0)
    values = np.asarray([s for s in samples if s is not None], dtype=float)
    return values[np.isfinite(values) & (values > 0)]


def comparison(table: pd.DataFrame, machines: list[str], baseline: str) -> pd.DataFrame:
    """Every machine x KEY, with speedup against the baseline and flags; absent rows are explicit."""
    keys = table[KEY].drop_duplicates()
    grid = pd.DataFrame({"machine": machines}).merge(keys, how="cross")
    full = grid.merge(table, on=["machine", *KEY], how="left", indicator=True)
    full["missing"] = full.pop("_merge") == "left_only"
    base = table[table["machine"] == baseline][[*KEY, "median_s", "ci95_low_s", "ci95_high_s", *COMPARABILITY]]
    full = full.merge(base.rename(columns={c: f"baseline_{c}" for c in ["median_s", "ci95_low_s", "ci95_high_s",
                                                                        *COMPARABILITY]}),
                      on=KEY, how="left")
    full["differs"] = [_differences(row) for row in full.itertuples()]
    full["speedup"] = full["baseline_median_s"] / full["median_s"]
    low_s, high_s = (full[c].where(full[c] > 0) for c in INTERVAL_OF["median_s"])
    for rate in RATES:  # per second: the slow end of the time is the low end of the rate
        full[INTERVAL_OF[rate][0]] = full[rate] * full["median_s"] / high_s
        full[INTERVAL_OF[rate][1]] = full[rate] * full["median_s"] / low_s
    # The baseline against itself has speedup 1.0 by definition; an interval there would only confuse.
    others = full["machine"] != baseline
    full["speedup_ci_low"] = (full["baseline_ci95_low_s"] / high_s).where(others)
    full["speedup_ci_high"] = (full["baseline_ci95_high_s"] / low_s).where(others)
    known = full["speedup_ci_low"].notna() & full["speedup_ci_high"].notna()
    full["speedup_within_noise"] = ((full["speedup_ci_low"] <= 1.0) & (full["speedup_ci_high"] >= 1.0)
                                    ).astype("boolean").where(known)
    full["noisy"] = full["noisy"].fillna(False).astype(bool)
    full["figure_flags"] = [f if isinstance(f, tuple) else () for f in full["figure_flags"]]
    full["marks"] = [_marks(f, d) for f, d in zip(full["figure_flags"], full["differs"])]
    full["flags"] = [_flags(row, baseline) for row in full.itertuples()]
    ordered = ["machine", *KEY, *TIMING_COLUMNS, *(bound for rate in RATES for bound in INTERVAL_OF[rate]),
               "speedup", *INTERVAL_OF["speedup"], "speedup_within_noise",
               "missing", "flags", "marks", "figure_flags", "differs", "quick", "torch", "cuda", "source"]
    rank = {m: i for i, m in enumerate(machines)}
    full = full.sort_values(by=["model", "mode", "setup", "world_size", "batch_size", "machine"],
                            key=lambda s: s.map(rank) if s.name == "machine" else s)
    return full[ordered + ["samples"]].reset_index(drop=True)


def _differences(row) -> str:
    """What makes this row not like for like with the baseline's, e.g. "quick vs full; torch 2.10 vs 2.11"."""
    if row.missing or pd.isna(row.baseline_median_s):
        return ""
    out = []
    for column, name in COMPARABILITY.items():
        mine, theirs = getattr(row, column), getattr(row, f"baseline_{column}")
        if _unknown(mine) or _unknown(theirs) or mine == theirs:
            continue  # a format that does not say cannot be called different
        if column == "quick":
            out.append(f"{'quick' if mine else 'full'} vs {'quick' if theirs else 'full'} on the baseline")
        elif column == "settings_key":
            out.append(f"settings differ from the baseline's ({mine} vs {theirs})")
        else:
            out.append(f"{name} {mine} vs {theirs}")
    return "; ".join(out)


def _unknown(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _marks(figure_flags: tuple, differs: str) -> str:
    """The short note a table cell carries: the figure's flags (quick is said once, above), and
    "not comparable" when it differs from the baseline's figure in more than its speed."""
    marks = [f for f in figure_flags if f != "quick"]
    return ", ".join(marks + (["not comparable"] if differs else []))


def _flags(row, baseline: str) -> str:
    flags = []
    if row.missing:
        flags.append(f"missing on {row.machine}")
    elif pd.isna(row.baseline_median_s):
        flags.append(f"missing on baseline {baseline}")
    flags += [f for f in row.figure_flags if f != "quick"]
    if row.differs:
        flags.append(row.differs)
    return "; ".join(flags)


def row_label(frame: pd.DataFrame) -> pd.Series:
    """Each row's figure_label."""
    world = frame["world_size"].astype("string").fillna("?")  # "?": a file that did not say how many
    return pd.Series([figure_label(*row) for row in zip(frame["model"], frame["mode"], frame["setup"], world,
                                                        frame["dtype"], frame["channels_last"],
                                                        frame["threads_setting"].astype(str))],
                     index=frame.index, dtype=object)


def figure_label(model, mode, setup, world_size, dtype, channels_last, threads_setting: str) -> str:
    """model mode setup (xN) (dtype) (channels_last) (Nt), the way a reader names a figure."""
    label = f"{model} {mode} {setup}"
    if str(world_size) != "1":
        label += f" x{world_size}"
    if dtype not in ("float32", "", None):
        label += f" {dtype}"
    if channels_last:
        label += " channels_last"
    return label if threads_setting == "all" else f"{label} {threads_setting}t"


def shown(value: float, marks: str, missing: bool, digits: int = 4, low=None, high=None, note: str = "") -> str:
    """A cell for the Markdown/HTML pivots: never a blank that reads as 0; the 95% interval in
    square brackets when known, then a note, then flags in round brackets: "2.01 [1.95–2.07] (noisy)"."""
    if missing:
        return "missing"
    if value is None or pd.isna(value):
        return "n/a"
    text = _number(value, digits)
    if low is not None and high is not None and pd.notna(low) and pd.notna(high):
        text += f" [{_number(low, digits)}–{_number(high, digits)}]"  # a dash: "[7,950, 8,240]" would misread
    text += f" {note}" if note else ""
    return f"{text} ({marks})" if marks else text


def _number(value: float, digits: int) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"  # 12,560 reads better than 1.256e+04


def by_machine(frame: pd.DataFrame, index: str, machines: list[str]) -> pd.DataFrame:
    """The frame's `cell` column as a table: one row per `index`, one column per machine, in order."""
    table = frame.pivot_table(index=index, columns="machine", values="cell", aggfunc="first", sort=False)
    return table[[m for m in machines if m in table.columns]]


def rows_with(comp: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows of every key that has `column` on some machine (with that key's missing rows)."""
    known = comp.loc[comp[column].notna(), KEY].drop_duplicates()
    return comp.merge(known, on=KEY, how="inner")


def pivot_shown(comp: pd.DataFrame, value: str, machines: list[str], digits: int = 4) -> pd.DataFrame:
    frame = comp.assign(row=row_label(comp))
    low, high = INTERVAL_OF[value]
    frame["cell"] = [shown(v, marks, m, digits, lo, hi) for v, marks, m, lo, hi in
                     zip(frame[value], frame["marks"], frame["missing"], frame[low], frame[high])]
    # The row's setup names its device (cpu, cpu-ddp, cuda, ...): one column per machine suffices.
    return by_machine(frame, "row", machines).fillna("missing")


def latency_table(comp: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    """Serving figures (mode "serve"): "p50 / p90 / p99" milliseconds a call, per machine."""
    frame = comp[comp["mode"] == "serve"]
    frame = frame.assign(row=row_label(frame), cell=[
        "missing" if r.missing else "n/a" if pd.isna(r.latency_p50_s) else
        " / ".join(f"{1e3 * v:.3g}" for v in (r.latency_p50_s, r.latency_p90_s, r.latency_p99_s))
        + (f" ({r.marks})" if r.marks else "") for r in frame.itertuples()])
    return by_machine(frame, "row", machines).fillna("missing")


def speedup_table(comp: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    frame = comp.assign(row=row_label(comp))

    def cell(r):
        if not r.missing and pd.isna(r.speedup):
            return "no baseline"
        within_noise = pd.notna(r.speedup_within_noise) and bool(r.speedup_within_noise)
        return shown(r.speedup, r.marks, r.missing, 3, r.speedup_ci_low, r.speedup_ci_high,
                     WITHIN_NOISE if within_noise else "")

    frame["cell"] = [cell(r) for r in frame.itertuples()]
    return by_machine(frame, "row", machines)


def geometric_means(comp: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    """Geometric mean of the speedups across models, per mode and device setup, and over everything."""
    usable = comp[comp["speedup"].notna() & (comp["speedup"] > 0)].copy()
    usable["log"] = np.log(usable["speedup"])
    usable["group"] = row_label(usable.assign(model="")).str.strip()
    per_group = usable.groupby(["group", "machine"])["log"].agg(["mean", "size"]).reset_index()
    overall = usable.groupby("machine")["log"].agg(["mean", "size"]).reset_index().assign(group="all rows")
    both = pd.concat([per_group, overall])
    both["cell"] = [f"{math.exp(m):.3g} (n={n})" for m, n in zip(both["mean"], both["size"])]
    return by_machine(both, "group", machines).fillna("n/a")


def scaling(table: pd.DataFrame) -> pd.DataFrame:
    """Multi-process/multi-GPU efficiency of every multi-device row, by suite.timing.scaling's rule."""
    columns = ["machine", "model", "mode", "setup", "world_size", "batch_size", "dtype", "threads",
               "throughput", "reference_setup", "reference_throughput", "efficiency", "noisy"]
    rows = [_plain(r) for r in table.to_dict("records")]
    references = {(r["machine"], reference_key(r)): r["throughput"] for r in rows if r["world_size"] == 1}
    out = []
    for r in rows:
        if r["world_size"] is None or r["world_size"] <= 1:
            continue
        reference = references.get((r["machine"], reference_key(r)))
        value = efficiency(r["throughput"], r["world_size"], reference)
        out.append({**{c: r.get(c) for c in columns},
                    # --quick runs time the CPU at all cores only: no 1-thread reference for CPU DDP.
                    "reference_setup": REFERENCE_SETUP.get(r["setup"], r["device"]) if reference else "not in this run",
                    "reference_throughput": reference if reference else math.nan,
                    "efficiency": value if value is not None else math.nan})
    return pd.DataFrame(out, columns=columns)


def _plain(row: dict) -> dict:
    """pandas' missing values (NA, NaN) as None, so that keys of two rows compare equal."""
    return {k: None if not isinstance(v, (list, tuple)) and pd.isna(v) else v for k, v in row.items()}


def require_records(loaded) -> None:
    if not any(m.timings or m.verdicts or m.errors or m.limits for m in loaded):
        sources = ", ".join(m.source for m in loaded)
        raise EmptyResultsError(f"no timing or conformance records in {sources}")
