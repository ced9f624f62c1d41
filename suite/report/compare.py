"""`torchsuite compare BASELINE NEW`: did anything get slower, for real?

For every figure both files hold (same model, mode, setup, world size, batch, dtype, memory
format, threads), the ratio of medians NEW / BASELINE, its 90% interval and a verdict. A run's
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
    unchanged   the ratio's 90% interval lies within [1/margin, margin]: a change beyond the
                threshold either way is ruled out by two one-sided tests at 5% each (TOST)
    undecided   neither: with the processes a side that would decide it at the spread seen
    regressed   also: a figure or check the baseline has whose case crashed, hung or ran out of
                memory in NEW (suite.isolation): a kernel that kills its process is the worst
                slowdown there is
    untrusted   two runs: a flagged figure on either side (noisy, contended, drift,
                few_samples, throttled), fewer than 5 raw samples, or two runs whose machine ran
                at different speeds: their canaries (the fixed matmul each torchsuite run times
                around every figure, median over the run) differ by more than the threshold.
                A VM that is 20% slower this hour than last would otherwise look like a
                regression of every figure.

The two sides of one `torchsuite ab` session (the same `run.session`) are judged on the session's
rounds instead (paired_rounds): each round's two processes ran back to back, each is taken against
its own canary, and a trimmed paired t test of the rounds' log ratios cancels the machine's drift;
only a round disturbed on one side only is left out, and too few rounds left is `untrusted`.
A session is judged again after every two rounds and stops at its first verdict, so its files say
at which look they were judged (`run.looks`), and look k needs p < 0.01 / (k (k + 1))
(session_significance): a 1% chance at every look would add up over a session's ten.

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
from suite.report import sources, store, tables
from suite.results import json_ready, write_json_atomically
from suite.timing.processes import DISTURBED
from suite.timing.stats import LogRatio, paired_log_ratio

SIGNIFICANCE = 0.01
# `unchanged` is an equivalence test: two one-sided tests (TOST), each that the change is beyond the
# threshold one way, each at 5%. Both reject exactly when the ratio's 90% interval lies inside the
# margin, so that is the interval compare judges `unchanged` on, prints, and gives bisect.
EQUIVALENCE = 0.05
INTERVAL = 1 - 2 * EQUIVALENCE

# Raw samples a side needs before Mann-Whitney may judge it (a figure is *sampled* to 10, 5 quick:
# suite.timing.options.MIN_SAMPLES).
MIN_SAMPLES_TO_JUDGE = 5
# One process's figure moved up to 11% between quiet reruns of this project's 2-core VM: a
# figure without process data regresses only beyond the threshold and this much more.
ONE_PROCESS_ALLOWANCE = 0.10
PROCESS_COLUMNS = ("processes", "process_log_sd")
UNTRUSTED_FLAGS = {"noisy", "contended", "drift", "few_samples", "throttled"}
CHANGE_VERDICTS = ("regressed", "improved", "unchanged", "untrusted")


def session_significance(looks: int) -> float:
    """The p a session's `looks`-th look at its rounds needs: SIGNIFICANCE / (k (k + 1)).

    `torchsuite ab` judges a session after its first rounds and again after every two more, and
    stops at the first look that decides. Each look at p < 0.01 would give a same-code figure a new
    1% chance to be called regressed at every look, about ten in a session of the default length.
    These shares of the 1% (a half, a sixth, a twelfth, ...) add up to less than 1% however many
    looks a session takes (a union bound: it holds whatever the looks' correlation)."""
    if looks < 1:
        raise ValueError(f"a session's looks count from 1, got {looks}")
    return SIGNIFICANCE / (looks * (looks + 1))


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
    processes_to_decide: int | None = None  # undecided: processes a side that would decide, at the spread seen


def _one_side(path) -> tuple[sources.MachineResults, pd.DataFrame]:
    loaded = store.load_input(path)
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


def interleaved(base: sources.MachineResults, new: sources.MachineResults) -> bool:
    """Whether the two files are the sides of one interleaved session (torchsuite ab, bisect)."""
    session = base.run.get("session")
    return bool(session) and session == new.run.get("session")


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
    paired = interleaved(base_loaded, new_loaded)
    looks = _looks(base_loaded) if paired else None
    significance = session_significance(looks) if looks else SIGNIFICANCE
    rows = [_row(label, r, threshold, machine_moved, paired, significance)
            for label, r in zip(labels, joined.to_dict("records"))]
    rows += crashed_rows(base_loaded, new_loaded, {row.figure for row in rows})
    rows.sort(key=lambda row: row.ratio)
    header = {"baseline": _provenance(base_loaded, canaries[0]), "new": _provenance(new_loaded, canaries[1]),
              "threshold": threshold, "significance": significance, "looks": looks,
              "counts": {v: sum(r.verdict == v for r in rows) for v in CHANGE_VERDICTS}}
    return header, rows


def _looks(loaded: sources.MachineResults) -> int:
    """The look at which a session's files were judged (1 for files written before sessions said)."""
    looks = loaded.run.get("looks", 1)
    if not isinstance(looks, int) or isinstance(looks, bool) or looks < 1:
        raise SuiteError(f"{loaded.source}: run.looks must be a positive whole number, got {looks!r}")
    return looks


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


def between_process_estimate(r: dict) -> LogRatio | None:
    """log(new / base) from both sides' process medians, each side with its own between-process
    spread (process_log_sd); None when a side has fewer than two processes or no spread."""
    sides = []
    for side in ("base", "new"):
        medians, log_sd = process_medians(r[f"processes_{side}"]), r[f"process_log_sd_{side}"]
        if len(medians) < 2 or not isinstance(log_sd, (int, float)) or math.isnan(log_sd):
            return None
        # each side's own degrees of freedom: its figures share the machine's moments (suite.timing.processes)
        sides.append((statistics.fmean(math.log(m) for m in medians), log_sd ** 2 / len(medians), len(medians)))
    (mean_base, var_base, n_base), (mean_new, var_new, n_new) = sides
    standard_error = math.sqrt(var_base + var_new)
    if standard_error == 0:
        return None
    return LogRatio(mean_new - mean_base, standard_error, n_base + n_new - 2, min(n_base, n_new))


def paired_rounds(r: dict, threshold: float) -> tuple[list[float], list[int], bool]:
    """An interleaved session's rounds: each round's log(new / base) of its two processes; the
    rounds left out because a disturbance (contended, drift, throttled) hit one side's process and
    not the other's (a disturbance that hit both hit them alike: the round stays); and whether the
    processes were taken against their canaries.

    Each process's median is taken against its own canary (the geometric mean of the canary times
    around it): a process that a busy neighbour slowed all along, canaries included, is scaled
    back. Unless the builds move the canary themselves (a torch whose matmul got slower): when the
    rounds' canary ratios have a median beyond half the threshold, the raw medians are judged."""
    def by_round(processes) -> dict:
        return {p["round"]: p for p in processes or () if isinstance(p, dict) and isinstance(p.get("round"), int)
                and (p.get("median_s") or 0) > 0}

    def canary(p: dict) -> float | None:
        times = [p.get("canary_before_s"), p.get("canary_after_s")]
        return math.sqrt(times[0] * times[1]) if all(isinstance(t, (int, float)) and t > 0 for t in times) else None

    base, new = by_round(r["processes_base"]), by_round(r["processes_new"])
    kept, lopsided = [], []
    for index in sorted(set(base) & set(new)):
        if bool(set(base[index].get("flags") or ()) & DISTURBED) != bool(set(new[index].get("flags") or ()) & DISTURBED):
            lopsided.append(index)
        else:
            kept.append((base[index], new[index]))
    figure = [math.log(n["median_s"] / b["median_s"]) for b, n in kept]
    canaries = [(canary(b), canary(n)) for b, n in kept]
    if not kept or not all(all(pair) for pair in canaries):
        return figure, lopsided, False
    moved = [math.log(n / b) for b, n in canaries]
    if abs(statistics.median(moved)) > math.log(1 + threshold) / 2:  # the builds moved the canary
        return figure, lopsided, False
    return [f - m for f, m in zip(figure, moved)], lopsided, True


def judge(ratio: float, interval: tuple[float, float] | None, p_slower: float, p_faster: float,
          margin: float, significance: float = SIGNIFICANCE) -> str:
    """regressed or improved: beyond the margin, significantly; unchanged: the interval lies within
    [1/margin, margin], so it rules a change out; undecided: neither."""
    if ratio > margin and p_slower < significance:
        return "regressed"
    if ratio < 1 / margin and p_faster < significance:
        return "improved"
    if interval is not None and 1 / margin <= interval[0] and interval[1] <= margin:
        return "unchanged"
    return "undecided"


def _row(label: str, r: dict, threshold: float, machine_moved: str | None, paired: bool,
         significance: float = SIGNIFICANCE) -> Row:
    ratio = r["median_s_new"] / r["median_s_base"]
    flags = (set(r["figure_flags_base"] or ()) | set(r["figure_flags_new"] or ())) & UNTRUSTED_FLAGS
    key = {k: r[k] for k in tables.KEY}
    margin = 1 + threshold

    def row(verdict, why, interval=None, p=(None, None), needed=None, ratio=ratio) -> Row:
        low, high = interval or (None, None)
        return Row(label, key, r["median_s_base"], r["median_s_new"], ratio, low, high, p[0], p[1], verdict, why, needed)

    if paired:
        log_ratios, lopsided, against_canary = paired_rounds(r, threshold)
        estimate = paired_log_ratio(log_ratios)
        left_out = (f"; {len(lopsided)} round(s) left out, disturbed on one side only ({', '.join(sorted(flags & DISTURBED))})"
                    if lopsided else "")
        if estimate is None:
            return row("untrusted", f"{len(log_ratios)} round(s) with both sides alike: too few to judge{left_out}")
        basis = (f"{estimate.n} interleaved rounds" + (", each process against its canary" if against_canary else "")
                 + left_out)
        ratio = math.exp(estimate.difference)
    else:
        estimate = between_process_estimate(r)
        basis = "between processes"
        if flags:
            return row("untrusted", "flagged: " + ", ".join(sorted(flags)))
        if machine_moved:
            return row("untrusted", machine_moved)
    if estimate is not None:
        p, interval = estimate.p_values(), estimate.interval(INTERVAL)
        needed = estimate.processes_to_decide(margin, significance, INTERVAL)
    else:  # one process a side: its samples, with the rerun-to-rerun movement one process cannot see
        interval = tables.median_ratio_interval(r["samples_new"], r["samples_base"], INTERVAL)  # median(new) / median(base)
        interval = None if math.isnan(interval[0]) else interval
        samples = tables.as_samples(r["samples_base"]), tables.as_samples(r["samples_new"])
        if min(map(len, samples)) < MIN_SAMPLES_TO_JUDGE:
            return row("untrusted", f"fewer than {MIN_SAMPLES_TO_JUDGE} raw samples on a side", interval)
        p, needed = _p_values(*samples), None
        margin *= 1 + ONE_PROCESS_ALLOWANCE
        basis = f"one process a side: beyond the threshold by {ONE_PROCESS_ALLOWANCE:.0%} more"
    verdict = judge(ratio, interval, *p, margin, significance)
    if verdict == "regressed":
        why = f"{ratio - 1:+.1%}, p = {p[0]:.2g} ({basis})"
    elif verdict == "improved":
        why = f"{ratio - 1:+.1%}, p = {p[1]:.2g} ({basis})"
    elif verdict == "unchanged":
        why = f"within {margin - 1:.1%} ({basis})"
    else:
        span = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "no interval"
        if estimate is None:
            advice = "several processes a side would decide (torchsuite run or ab time figures in several)"
        elif needed is None:
            advice = f"it sits on the {margin - 1:.0%} threshold: no number of processes would decide"
        else:
            advice = f"about {needed} processes a side would decide (now {estimate.n})"
        slower = ratio >= 1
        if (ratio > margin if slower else ratio < 1 / margin):
            what = f"not significant (p = {p[0] if slower else p[1]:.2g}, not below {significance:.2g})"
        else:
            what = f"its interval {span} does not rule out a change beyond {margin - 1:.1%}"
        why = f"{ratio - 1:+.1%} but {what}: {advice} ({basis})"
    return row(verdict, why, interval, p, needed, ratio)


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
    if header.get("looks"):
        lines.append(f"threshold {header['threshold']:.0%}, one-sided at p < {header['significance']:.2g}: a trimmed "
                     f"paired t test of the session's rounds at its look {header['looks']} (look k needs "
                     f"p < {SIGNIFICANCE} / (k (k + 1)): the looks share the 1%)")
    else:
        lines.append(f"threshold {header['threshold']:.0%}, one-sided at p < {header['significance']}: a t test of "
                     f"the process medians where both sides have several processes, else Mann-Whitney U "
                     f"of the samples with {ONE_PROCESS_ALLOWANCE:.0%} more margin")
    lines.append("")
    table = pd.DataFrame([{
        "ratio": f"{r.ratio:.3f}" if math.isfinite(r.ratio) else "lost",
        f"{INTERVAL:.0%} interval": f"[{r.ratio_ci_low:.3f}, {r.ratio_ci_high:.3f}]" if r.ratio_ci_low is not None else "",
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
