"""`torchsuite compare BASELINE NEW`: did anything get slower, for real?

For every figure both files hold (same model, mode, setup, world size, batch, dtype, memory
format, threads), the ratio of medians NEW / BASELINE, its 95% interval and a verdict. A run's
figure comes from several fresh processes (suite.timing.processes), and what repeats is judged
on them: the spread that matters is between processes, not between one process's samples (five
quiet reruns of one plan moved 4-7% while each claimed 1%).

    regressed   slower by more than the threshold, and significantly: with process data on both
                sides, a one-sided t test of the mean log process medians, with each side's
                between-process spread (process_log_sd, suite.timing.processes) and
                degrees of freedom, processes - 1 (p < 0.01);
                without it (older files, pytest-benchmark, asv: one process), a one-sided
                Mann-Whitney U test of the raw samples at p < 0.01 and a ratio beyond the
                threshold plus ONE_PROCESS_ALLOWANCE, the rerun-to-rerun movement one process
                cannot see
    improved    faster by more than the threshold, and significantly (the mirror tests)
    unchanged   neither
    regressed   also: a figure or check the baseline has whose case crashed, hung or ran out of
                memory in NEW (suite.isolation): a kernel that kills its process is the worst
                slowdown there is
    untrusted   a flagged figure on either side (noisy, contended, drift, few_samples,
                throttled), fewer than 5 raw samples, or two runs whose machine ran at
                different speeds: their canaries (the fixed matmul each torchsuite run times
                around every figure, median over the run) differ by more than the threshold.
                A VM that is 20% slower this hour than last would otherwise look like a
                regression of every figure.

Exit status: 1 when any figure regressed, 0 otherwise, 2 on bad input.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from suite.errors import SuiteError
from suite.report import sources, tables
from suite.results import json_ready, write_json_atomically

SIGNIFICANCE = 0.01
# Raw samples a side needs before Mann-Whitney may judge it (a figure is *sampled* to 10, 5 quick:
# suite.timing.options.MIN_SAMPLES).
MIN_SAMPLES_TO_JUDGE = 5
# One process's figure moved up to 11% between quiet reruns of this project's 2-core VM: a
# figure without process data regresses only beyond the threshold and this much more.
ONE_PROCESS_ALLOWANCE = 0.10
PROCESS_COLUMNS = ("processes", "process_log_sd")
UNTRUSTED_FLAGS = {"noisy", "contended", "drift", "few_samples", "throttled"}
CHANGE_VERDICTS = ("regressed", "improved", "unchanged", "untrusted")


class NothingToCompareError(SuiteError):
    pass


@dataclass
class Row:
    figure: str
    key: dict  # model, mode, device, setup, world_size, batch_size, dtype, channels_last, threads_setting
    baseline_median_s: float
    new_median_s: float
    ratio: float
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    p_slower: float | None
    p_faster: float | None
    verdict: str
    why: str


def _one_side(path) -> tuple[sources.MachineResults, pd.DataFrame]:
    loaded = sources.load_any(path)
    table = tables.long_table([loaded])
    if not len(table):
        raise NothingToCompareError(f"{path}: no timing figures to compare")
    for column in PROCESS_COLUMNS:  # files of other tools and older runs have none
        if column not in table:
            table[column] = None
    return loaded, table


def canary_s(loaded: sources.MachineResults) -> float | None:
    """The run's canary: the median of the canary times around its figures (None: not recorded)."""
    values = [t.get(k) for t in loaded.timings for k in ("canary_before_s", "canary_after_s")]
    values = [v for v in values if isinstance(v, (int, float)) and v > 0]
    return statistics.median(values) if values else None


def _p_values(base: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    from scipy.stats import mannwhitneyu

    slower = mannwhitneyu(new, base, alternative="greater").pvalue
    faster = mannwhitneyu(new, base, alternative="less").pvalue
    return float(slower), float(faster)


def compare(baseline_path, new_path, threshold: float = 0.05) -> tuple[dict, list[Row]]:
    """(header, rows sorted by ratio, slowest last); raises SuiteError on bad input."""
    if not threshold > 0:
        raise SuiteError(f"--threshold must be positive, got {threshold}")
    base_loaded, base = _one_side(baseline_path)
    new_loaded, new = _one_side(new_path)
    joined = base.merge(new, on=tables.KEY, suffixes=("_base", "_new"))
    joined = joined[joined["median_s_base"].notna() & joined["median_s_new"].notna()]  # asv: skipped
    if not len(joined):
        raise NothingToCompareError(f"no figure in common between {baseline_path} and {new_path}")
    canaries = canary_s(base_loaded), canary_s(new_loaded)
    machine_moved = None
    if all(canaries) and abs(canaries[1] / canaries[0] - 1) > threshold:
        machine_moved = f"the machine's speed differed: canary x{canaries[1] / canaries[0]:.3f}"
    labels = tables.row_label(joined)
    rows = [_row(label, r, threshold, machine_moved) for label, r in zip(labels, joined.to_dict("records"))]
    rows += crashed_rows(base_loaded, new_loaded, {row.figure for row in rows})
    rows.sort(key=lambda row: row.ratio)
    header = {"baseline": _provenance(base_loaded, canaries[0]), "new": _provenance(new_loaded, canaries[1]),
              "threshold": threshold, "significance": SIGNIFICANCE,
              "counts": {v: sum(r.verdict == v for r in rows) for v in CHANGE_VERDICTS}}
    return header, rows


def crashed_rows(base: sources.MachineResults, new: sources.MachineResults, compared: set[str]) -> list[Row]:
    """A regressed row for each figure the baseline timed that NEW lost to a crash or hang (no
    process of it finished), and for each check the baseline passed whose case crashed in NEW."""
    from suite.isolation import LOST

    rows = []
    lost_figures = {c["figure"]: c for c in new.crashes if c.get("figure")}
    timed_in_new = {t.get("figure") for t in new.timings}
    for record in base.timings:
        crash = lost_figures.get(record.get("figure"))
        if crash is None or record["figure"] in timed_in_new or record["figure"] in compared:
            continue
        rows.append(Row(record["figure"], {k: record.get(k) for k in tables.KEY}, record["median_s"], math.nan,
                        math.inf, None, None, None, None, "regressed",
                        f"{crash.get('outcome', 'crash')} in the new run: {crash.get('detail', '')}"))
    passed = {(v.get("suite"), v.get("case"), v.get("check"), v.get("device")) for v in base.verdicts if v.get("passed")}
    for verdict in new.verdicts:
        key = (verdict.get("suite"), verdict.get("case"), verdict.get("check"), verdict.get("device"))
        if verdict.get("outcome") in LOST and not verdict.get("passed") and key in passed:
            rows.append(Row("check " + " ".join(str(k) for k in key if k), {}, math.nan, math.nan, math.inf,
                            None, None, None, None, "regressed", verdict.get("detail", "")))
    return rows


def process_medians(processes) -> list[float]:
    """The per-process medians of a run's figure ([] for a figure of one process)."""
    if not isinstance(processes, list):
        return []
    return [p["median_s"] for p in processes if isinstance(p, dict) and (p.get("median_s") or 0) > 0]


def between_process_test(r: dict) -> tuple[float, float, float, float] | None:
    """(p_slower, p_faster, ratio interval low, high) from both sides' process medians, or None
    when a side has fewer than two processes or no spread."""
    from suite.timing.stats import t_quantile
    from scipy.stats import t

    sides = []
    for side in ("base", "new"):
        medians, log_sd = process_medians(r[f"processes_{side}"]), r[f"process_log_sd_{side}"]
        if len(medians) < 2 or not isinstance(log_sd, (int, float)) or math.isnan(log_sd):
            return None
        # each side's own degrees of freedom: its figures share the machine's moments (suite.timing.processes)
        sides.append((statistics.fmean(math.log(m) for m in medians), log_sd ** 2 / len(medians), len(medians) - 1))
    (mean_base, var_base, df_base), (mean_new, var_new, df_new) = sides
    difference, standard_error, df = mean_new - mean_base, math.sqrt(var_base + var_new), df_base + df_new
    if standard_error == 0:
        return None
    statistic = difference / standard_error
    half = t_quantile(0.975, df) * standard_error
    return (float(t.sf(statistic, df)), float(t.cdf(statistic, df)),
            math.exp(difference - half), math.exp(difference + half))


def _row(label: str, r: dict, threshold: float, machine_moved: str | None) -> Row:
    base_samples = tables.as_samples(r["samples_base"])
    new_samples = tables.as_samples(r["samples_new"])
    ratio = r["median_s_new"] / r["median_s_base"]
    flags = (set(r["figure_flags_base"] or ()) | set(r["figure_flags_new"] or ())) & UNTRUSTED_FLAGS
    p_slower = p_faster = None
    between = between_process_test(r)
    if between is not None:
        p_slower, p_faster, low, high = between
        margin, basis = 1 + threshold, "between processes"
    else:
        low, high = tables.median_ratio_interval(r["samples_new"], r["samples_base"])  # median(new) / median(base)
        low, high = (None, None) if math.isnan(low) else (low, high)
        if min(len(base_samples), len(new_samples)) >= MIN_SAMPLES_TO_JUDGE:
            p_slower, p_faster = _p_values(base_samples, new_samples)
        margin = (1 + threshold) * (1 + ONE_PROCESS_ALLOWANCE)
        basis = f"one process a side: beyond the threshold by {ONE_PROCESS_ALLOWANCE:.0%} more"
    if flags:
        verdict, why = "untrusted", "flagged: " + ", ".join(sorted(flags))
    elif p_slower is None:
        verdict, why = "untrusted", f"fewer than {MIN_SAMPLES_TO_JUDGE} raw samples on a side"
    elif machine_moved:
        verdict, why = "untrusted", machine_moved
    elif ratio > margin and p_slower < SIGNIFICANCE:
        verdict, why = "regressed", f"{ratio - 1:+.1%}, p = {p_slower:.2g} ({basis})"
    elif ratio < 1 / margin and p_faster < SIGNIFICANCE:
        verdict, why = "improved", f"{ratio - 1:+.1%}, p = {p_faster:.2g} ({basis})"
    else:
        verdict, why = "unchanged", "" if between is not None else basis
    key = {k: r[k] for k in tables.KEY}
    return Row(label, key, r["median_s_base"], r["median_s_new"], ratio, low, high, p_slower, p_faster, verdict, why)


def _provenance(loaded: sources.MachineResults, canary: float | None) -> dict:
    env = loaded.environment
    return {"file": loaded.source, "machine": loaded.machine_name, "format": loaded.format,
            "suite_commit": env.get("suite_commit") or env.get("commit"), "torch": env.get("torch"),
            "torch_git_version": env.get("torch_git_version"), "cuda": env.get("cuda"),
            "cudnn": env.get("cudnn"), "canary_s": canary}


def format_table(header: dict, rows: list[Row]) -> str:
    lines = []
    for side in ("baseline", "new"):
        h = header[side]
        canary = f"{h['canary_s'] * 1e3:.3f} ms" if h["canary_s"] else "n/a"
        lines.append(f"{side:<8} {h['machine']} ({h['file']}): suite {h['suite_commit'] or '?'}, "
                     f"torch {h['torch'] or '?'} ({h['torch_git_version'] or '?'}), CUDA {h['cuda'] or 'none'}, "
                     f"cuDNN {h['cudnn'] or 'none'}, canary {canary}")
    lines.append(f"threshold {header['threshold']:.0%}, one-sided at p < {header['significance']}: a t test of "
                 f"the process medians where both sides have several processes, else Mann-Whitney U "
                 f"of the samples with {ONE_PROCESS_ALLOWANCE:.0%} more margin")
    lines.append("")
    table = pd.DataFrame([{
        "ratio": f"{r.ratio:.3f}" if math.isfinite(r.ratio) else "lost",
        "95% interval": f"[{r.ratio_ci_low:.3f}, {r.ratio_ci_high:.3f}]" if r.ratio_ci_low is not None else "",
        "baseline": _ms(r.baseline_median_s), "new": _ms(r.new_median_s),
        "verdict": r.verdict, "figure": r.figure, "why": r.why} for r in rows])
    lines.append(table.to_string(index=False, justify="left", formatters={
        "figure": lambda v: f"{v:<{table['figure'].str.len().max()}}",
        "why": lambda v: f"{v:<{table['why'].str.len().max()}}"}))
    counts = ", ".join(f"{n} {v}" for v, n in header["counts"].items())
    lines += ["", counts]
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if math.isfinite(seconds) else "n/a"


def as_json(header: dict, rows: list[Row]) -> dict:
    return {"header": header, "rows": [asdict(r) for r in rows]}


def write_outputs(out_dir, header: dict, rows: list[Row]) -> list[Path]:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SuiteError(f"cannot write into {out}: {err}") from None
    write_json_atomically(out / "compare.json", as_json(header, rows))
    (out / "compare.txt").write_text(format_table(header, rows) + "\n", encoding="utf-8")
    return [out / "compare.json", out / "compare.txt"]


def exit_status(rows: list[Row]) -> int:
    return 1 if any(r.verdict == "regressed" for r in rows) else 0


def dumps(header: dict, rows: list[Row]) -> str:
    return json.dumps(json_ready(as_json(header, rows)), indent=1, allow_nan=False)
