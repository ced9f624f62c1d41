"""`torchsuite compare BASELINE NEW`: did anything get slower, for real?

For every figure both files hold (same model, mode, setup, world size, batch, dtype, memory
format, threads), the ratio of medians NEW / BASELINE with a 95% bootstrap interval from the raw
samples, and a verdict:

    regressed   slower by more than the threshold, and significantly: a one-sided Mann-Whitney
                U test of the raw samples at p < 0.01 (asv's `continuous` uses this test at
                0.002; with the 5 samples of a quick run the smallest p an exact test can give
                is 1/252 = 0.004, so 0.002 could never fire there)
    improved    faster by more than the threshold, and significantly (the mirror test)
    unchanged   neither
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
MIN_SAMPLES = 5
UNTRUSTED_FLAGS = {"noisy", "contended", "drift", "few_samples", "throttled"}
VERDICTS = ("regressed", "improved", "unchanged", "untrusted")


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
    rows.sort(key=lambda row: row.ratio)
    header = {"baseline": _provenance(base_loaded, canaries[0]), "new": _provenance(new_loaded, canaries[1]),
              "threshold": threshold, "significance": SIGNIFICANCE,
              "counts": {v: sum(r.verdict == v for r in rows) for v in VERDICTS}}
    return header, rows


def _row(label: str, r: dict, threshold: float, machine_moved: str | None) -> Row:
    base_samples = tables.as_samples(r["samples_base"])
    new_samples = tables.as_samples(r["samples_new"])
    ratio = r["median_s_new"] / r["median_s_base"]
    low, high = tables.median_ratio_interval(r["samples_new"], r["samples_base"])  # median(new) / median(base)
    low, high = (None, None) if math.isnan(low) else (low, high)
    flags = (set(r["figure_flags_base"] or ()) | set(r["figure_flags_new"] or ())) & UNTRUSTED_FLAGS
    p_slower = p_faster = None
    if min(len(base_samples), len(new_samples)) >= MIN_SAMPLES:
        p_slower, p_faster = _p_values(base_samples, new_samples)
    if flags:
        verdict, why = "untrusted", "flagged: " + ", ".join(sorted(flags))
    elif p_slower is None:
        verdict, why = "untrusted", f"fewer than {MIN_SAMPLES} raw samples on a side"
    elif machine_moved:
        verdict, why = "untrusted", machine_moved
    elif ratio > 1 + threshold and p_slower < SIGNIFICANCE:
        verdict, why = "regressed", f"{ratio - 1:+.1%}, p = {p_slower:.2g}"
    elif ratio < 1 / (1 + threshold) and p_faster < SIGNIFICANCE:
        verdict, why = "improved", f"{ratio - 1:+.1%}, p = {p_faster:.2g}"
    else:
        verdict, why = "unchanged", ""
    key = {k: r[k] for k in tables.KEY}
    return Row(label, key, r["median_s_base"], r["median_s_new"], ratio, low, high, p_slower, p_faster, verdict, why)


def _provenance(loaded: sources.MachineResults, canary: float | None) -> dict:
    env = loaded.environment
    return {"file": loaded.source, "machine": loaded.machine, "format": loaded.format,
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
    lines.append(f"threshold {header['threshold']:.0%}, one-sided Mann-Whitney U at p < {header['significance']}")
    lines.append("")
    table = pd.DataFrame([{
        "ratio": f"{r.ratio:.3f}",
        "95% interval": f"[{r.ratio_ci_low:.3f}, {r.ratio_ci_high:.3f}]" if r.ratio_ci_low is not None else "",
        "baseline": f"{r.baseline_median_s * 1e3:.3f} ms", "new": f"{r.new_median_s * 1e3:.3f} ms",
        "verdict": r.verdict, "figure": r.figure, "why": r.why} for r in rows])
    lines.append(table.to_string(index=False, justify="left", formatters={
        "figure": lambda v: f"{v:<{table['figure'].str.len().max()}}",
        "why": lambda v: f"{v:<{table['why'].str.len().max()}}"}))
    counts = ", ".join(f"{n} {v}" for v, n in header["counts"].items())
    lines += ["", counts]
    return "\n".join(lines)


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
