"""`torchsuite report`: merge result files of any number of machines into CSV, Markdown, HTML and plots.

Everything is written into a temp directory beside the output directory and moved in only
once all of it succeeded, so a bad input never leaves a half-written report behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from suite.errors import SuiteError
from suite.report import convergence, machines, plots, render, sources, tables


def load_all(paths) -> list[sources.MachineResults]:
    loaded = [sources.load_any(p) for p in paths]
    if not loaded:
        raise tables.EmptyResultsError("no results files given")
    if not convergence.has_convergence(loaded):  # a `torchsuite converge` file has only these
        tables.require_records(loaded)
    return loaded


def _write_into(directory: Path, loaded, baseline: str) -> None:
    parts, comp, scaling = render.sections(loaded, baseline)
    csv = comp.drop(columns=["samples", "marks"]).assign(
        n_samples=[len(s) if isinstance(s, list) else 0 for s in comp["samples"]],
        figure_flags=[" ".join(f) for f in comp["figure_flags"]])
    csv.to_csv(directory / "comparison.csv", index=False)
    if len(scaling):
        scaling.to_csv(directory / "scaling.csv", index=False)
    _, verdicts = machines.conformance(loaded, tables.machine_order(loaded))
    if len(verdicts):
        verdicts.to_csv(directory / "conformance.csv")
    plots.write_plots(comp, scaling, tables.machine_order(loaded), baseline, directory)
    if convergence.has_convergence(loaded):
        convergence.runs_table(loaded).to_csv(directory / "convergence_runs.csv", index=False)
        convergence.scores_table(loaded, baseline).to_csv(directory / "convergence.csv", index=False)
        convergence.write_plot(loaded, directory)
    (directory / "report.md").write_text(render.to_markdown(parts), encoding="utf-8")
    (directory / "report.html").write_text(render.to_html(parts, directory), encoding="utf-8")


class ReportOutputError(SuiteError):
    pass


def build_report(paths, out_dir="reports", baseline: str | None = None) -> list[Path]:
    """Write the report of `paths` into out_dir; the paths written."""
    loaded = load_all(paths)
    baseline = tables.choose_baseline(loaded, baseline)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportOutputError(f"{out_dir} exists and is not a directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    except OSError as err:
        raise ReportOutputError(f"cannot write a report beside {out_dir}: {err}") from None
    try:
        _write_into(staging, loaded, baseline)
        out_dir.mkdir(exist_ok=True)
        written = []
        for item in sorted(staging.iterdir()):
            os.replace(item, out_dir / item.name)
            written.append(out_dir / item.name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
