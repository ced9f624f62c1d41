"""PNG plots of a report (matplotlib, Agg: no display needed). A plot with no data says so in its image.

A bar whose figure has a 95% interval (tables.INTERVAL_OF) carries it as a whisker; a bar without
one has no whisker at all, since a zero-length whisker would read as a certain figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from suite.report.tables import INTERVAL_OF, row_label


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _grouped_bars(ax, frame: pd.DataFrame, value: str, machines: list[str]) -> None:
    labels = list(dict.fromkeys(frame["label"]))
    width = 0.8 / max(len(machines), 1)
    x = np.arange(len(labels))
    for i, machine in enumerate(machines):
        part = frame[frame["machine"] == machine].set_index("label").reindex(labels)
        positions = x + (i - (len(machines) - 1) / 2) * width
        bars = ax.bar(positions, part[value].astype(float), width, label=machine)
        _whiskers(ax, positions, part, value)
        for bar, marks in zip(bars, part["marks"].fillna("")):
            if marks:  # a flagged figure (contended, drift, noisy...) or one not comparable
                bar.set_hatch("///")
                bar.set_edgecolor("black")
        for position, missing in zip(positions, part[value].isna()):
            if missing:  # an absent bar would read as 0
                ax.annotate("missing", (position, 0), xycoords=("data", "axes fraction"), rotation=90,
                            ha="center", va="bottom", fontsize=7, color="red")
    # Room for every label: with the standard workloads a run has dozens of rows.
    ax.figure.set_figwidth(max(10.0, 0.3 * len(labels) * max(len(machines), 1) ** 0.5))
    ax.set_xticks(x, labels, rotation=60 if len(labels) > 12 else 30, ha="right", rotation_mode="anchor", fontsize=8)
    if frame["marks"].fillna("").ne("").any():
        from matplotlib.patches import Patch

        handles, names = ax.get_legend_handles_labels()
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///"))
        names.append("hatched: flagged figure")
        ax.legend(handles, names, fontsize=8)
    else:
        ax.legend(fontsize=8)


def _whiskers(ax, positions: np.ndarray, part: pd.DataFrame, value: str) -> None:
    heights = part[value].to_numpy(float)
    low, high = (part[c].to_numpy(float) for c in INTERVAL_OF[value])
    known = ~(np.isnan(heights) | np.isnan(low) | np.isnan(high))
    if known.any():
        below, above = heights[known] - low[known], high[known] - heights[known]
        ax.errorbar(positions[known], heights[known], yerr=np.clip([below, above], 0, None), fmt="none",
                    ecolor="black", elinewidth=1, capsize=3)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_plots(comp: pd.DataFrame, scaling: pd.DataFrame, machines: list[str], baseline: str,
                directory: Path) -> list[Path]:
    plt = pyplot()
    present = comp[~comp["missing"]].assign(label=row_label)
    written = []
    try:
        fig, ax = plt.subplots(figsize=(10, 5))
        if present["throughput"].notna().any():
            _grouped_bars(ax, present, "throughput", machines)
            ax.set_ylabel("samples/s (whiskers: 95% interval)")
            ax.set_yscale("log")
            ax.set_title("Throughput by model and machine")
        else:
            _empty(ax, "no throughput figures")
        written.append(_save(fig, directory / "throughput.png"))

        fig, ax = plt.subplots(figsize=(10, 5))
        with_speedup = present[present["speedup"].notna()]
        if len(with_speedup):
            others = [m for m in machines if m != baseline] or machines  # the baseline is the line at 1.0
            _grouped_bars(ax, with_speedup[with_speedup["machine"].isin(others)], "speedup", others)
            ax.axhline(1.0, color="grey", linewidth=0.8)  # a whisker across it: within noise
            ax.set_ylabel(f"speedup vs {baseline} (whiskers: ratio of 95% intervals)")
            ax.set_title("Speedup against the baseline")
        else:
            _empty(ax, "no rows shared with the baseline")
        written.append(_save(fig, directory / "speedup.png"))

        fig, ax = plt.subplots(figsize=(8, 5))
        if len(scaling) and scaling["efficiency"].notna().any():
            for (machine, model, mode, setup), part in scaling.groupby(["machine", "model", "mode", "setup"]):
                part = part.sort_values("world_size")
                ax.plot([1, *part["world_size"]], [1.0, *part["efficiency"]], marker="o",
                        label=f"{machine} {model} {mode} {setup}")
            ax.set_xlabel("processes / GPUs")
            ax.set_ylabel("scaling efficiency")
            ax.set_ylim(bottom=0)
            ax.set_title("Scaling efficiency (1.0 = linear)")
            ax.legend(fontsize=7)
        else:
            _empty(ax, "no multi-process or multi-GPU timings")
        written.append(_save(fig, directory / "scaling.png"))

        fig, ax = plt.subplots(figsize=(10, 5))
        with_peak = present[present["peak_fraction"].notna()]
        if len(with_peak):
            _grouped_bars(ax, with_peak, "peak_fraction", machines)
            ax.set_ylabel("fraction of measured peak FLOP/s (whiskers: 95% interval)")
            ax.set_title("Achieved fraction of each machine's measured peak")
        else:
            _empty(ax, "no FLOP counts")
        written.append(_save(fig, directory / "peak_fraction.png"))
    finally:
        plt.close("all")
    return written
