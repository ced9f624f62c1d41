"""`torchsuite report`: merge result files of any number of machines into CSV, Markdown, HTML and plots.

Inputs are results files and results stores (suite.report.store), in any mix. Up to
FLEET_MACHINES machines get the report of a column each; past that, the fleet report
(suite.report.fleet): distributions across machines and the machines that are off. Files of a
fleet are ingested into a store inside the staging directory first, and it is dropped after.

Everything is written into a temp directory beside the output directory and moved in only
once all of it succeeded, so a bad input never leaves a half-written report behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from suite.errors import SuiteError
from suite.cases.fleet import FLEET_MACHINES
from suite.report import convergence, fleet, machines, plots, render, sources, store, tables
from suite.results import ResultsFileError


def load_all(paths) -> list[sources.MachineResults]:
    loaded = store.load_inputs(paths)
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
    """Write the report of `paths` (results files and stores) into out_dir; the paths written."""
    paths = [str(p) for p in paths]
    if not paths:
        raise tables.EmptyResultsError("no results files given")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportOutputError(f"{out_dir} exists and is not a directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    except OSError as err:
        raise ReportOutputError(f"cannot write a report beside {out_dir}: {err}") from None
    try:
        _write_report(paths, staging, baseline)
        out_dir.mkdir(exist_ok=True)
        written = []
        for item in sorted(staging.iterdir()):
            os.replace(item, out_dir / item.name)
            written.append(out_dir / item.name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_report(paths: list[str], staging: Path, baseline: str | None) -> None:
    stores = [p for p in paths if store.is_store(p)]
    files = [p for p in paths if p not in stores]
    if not stores and len(files) <= FLEET_MACHINES:  # a column each, without a store's detour
        loaded = load_all(files)
        _write_into(staging, loaded, tables.choose_baseline(loaded, baseline))
        return
    if files:  # a fleet's files: through a store of their own, made here and dropped with the staging
        ingested = store.ingest(files, staging / ".store")
        if ingested.errors:
            more = f" (and {len(ingested.errors) - 1} more unreadable files)" if len(ingested.errors) > 1 else ""
            raise ResultsFileError(ingested.errors[0] + more)
        stores.append(staging / ".store")
    try:
        if fleet.is_fleet(store.machine_count(stores)):
            fleet.write(fleet.diagnose(stores), staging)
        else:
            loaded = load_all(stores)
            _write_into(staging, loaded, tables.choose_baseline(loaded, baseline))
    finally:
        shutil.rmtree(staging / ".store", ignore_errors=True)
