"""The report's sections, rendered once as Markdown and once as self-contained HTML.

Every value that reaches the HTML goes through html.escape or DataFrame.to_html(escape=True):
machine names and check details come from other people's files.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from suite.report import compiled, convergence
from suite.report import machines as machine_facts
from suite.report import ops as ops_report
from suite.report import tables
from suite.report.compare import canary_s
from suite.timing.stats import NOISY_IQR_FRACTION
from suite.results import utc_now

HOW_TO_READ = (
    "Speedup is the baseline machine's median time per iteration divided by this machine's "
    "(above 1: faster than the baseline; 1.0 for the baseline itself).\n\n"
    "Square brackets after a figure hold its 95% interval. For a median time: the interval of the "
    "median that its results file records. For throughput and peak fraction: that interval in their "
    "units (throughput runs from global batch / the slow end to global batch / the fast end). For a "
    "speedup: the ratio of both machines' intervals, from the baseline's fast end over this machine's "
    "slow end to the baseline's slow end over this machine's fast end. No brackets: the file records "
    "no interval (pytest-benchmark and asv files do not), and none is made up. "
    f"\"{tables.WITHIN_NOISE}\" after a speedup: its interval contains 1.0, so on that row this "
    "machine is not distinguishably faster or slower than the baseline. In the plots the interval is "
    "the whisker on each bar; a speedup whisker across the 1.0 line is within noise.\n\n"
    "A word in round brackets after a figure is a flag: "
    f"noisy (IQR at least {NOISY_IQR_FRACTION:.0%} of the median), contended (other processes took "
    "cores the timing needed), drift (the machine's speed changed under the figure), few_samples, "
    "throttled (thermal or power limits), above_peak (faster than the calibrated peak, so that peak is no limit), above_gemm_limit (likewise for the machine-limits GEMM figure); "
    "repeat a flagged figure before trusting it. \"not "
    "comparable\" marks a figure taken with other settings, quick/full or versions than the "
    "baseline's (the Flags section says which). \"missing\" marks a row measured on another machine "
    "but not on this one (never a 0); \"no baseline\" a row the baseline did not measure.")


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    index: bool = True
    image: str | None = None


def summary(loaded, comp: pd.DataFrame, conformance: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    """The first screen: per machine, its checks, its timings and their flags, and its speed."""
    rows = []
    for machine in machines:
        mine = [m for m in loaded if m.machine_name == machine]
        checks = conformance[conformance["machine"] == machine] if len(conformance) else conformance
        figures = comp[(comp["machine"] == machine) & ~comp["missing"]] if len(comp) else comp
        speedups = figures["speedup"].dropna() if len(figures) else pd.Series(dtype=float)
        speedups = speedups[speedups > 0]
        rows.append({
            "machine": machine,
            "checks passed": int(checks["passed"].sum()) if len(checks) else 0,
            "checks failed": int(checks["failed"].sum()) if len(checks) else 0,
            "crashed": int(checks["crashed"].sum()) if len(checks) else 0,
            "timings": len(figures),
            "flagged timings": int((figures["marks"] != "").sum()) if len(figures) else 0,
            "geometric mean speedup": f"{np.exp(np.log(speedups).mean()):.3g} (n={len(speedups)})" if len(speedups) else "n/a",
            "run": ", ".join(dict.fromkeys(_run_kind(m) for m in mine)),
            # the fixed matmul timed around every figure: the machine's own speed, to read beside its figures
            "canary (ms)": _canary_ms(mine),
        })
    frame = pd.DataFrame(rows)
    if convergence.has_convergence(loaded):
        frame["convergence runs at target"] = [convergence.reached_summary(loaded, machine) for machine in machines]
    return frame if len(machines) > 1 else frame.drop(columns=["geometric mean speedup"])


def _canary_ms(loaded) -> str:
    values = [c for c in (canary_s(m) for m in loaded) if c]
    return f"{np.median(values) * 1e3:.3g}" if values else "n/a"


def _run_kind(loaded_machine) -> str:
    quick = {t.get("quick") for t in loaded_machine.timings} - {None}
    kind = "quick" if quick == {True} else "full" if quick == {False} else "mixed" if quick else loaded_machine.format
    return kind if loaded_machine.status == "complete" else f"{kind}, {loaded_machine.status}"


def sections(loaded, baseline: str) -> tuple[list[Section], pd.DataFrame, pd.DataFrame]:
    """Summary first, then the figures and plots, then conformance detail, then the machines."""
    machines = tables.machine_order(loaded)
    long = tables.long_table(loaded)
    comp = tables.comparison(long, machines, baseline)
    scaling = tables.scaling(long)
    checks, verdicts = machine_facts.conformance(loaded, machines)
    incomplete = [f"{m.machine_name} ({m.source}: {m.status})" for m in loaded if m.status != "complete"]
    out = [Section("Summary", f"Baseline: {baseline}. Speedups are against it; flagged timings carry a "
                   "flag in the tables below." + (
                       "\n\nIncomplete runs (interrupted or still running; their finished records are shown): "
                       + ", ".join(incomplete) if incomplete else ""),
                   summary(loaded, comp, checks, machines), index=False)]
    machine_limits = machine_facts.limits(loaded)
    if len(machine_limits):
        out.append(Section("Machine limits", machine_facts.LIMITS_TEXT, machine_limits, index=False))
    if len(comp) and len(machines) > 1:
        out.append(Section("Geometric mean speedup across models", "", _flat(tables.geometric_means(comp, machines)),
                           index=False))
    out.append(Section("How to read this report", HOW_TO_READ))
    if len(comp):
        out += [
            Section("Throughput (samples/s)", "Rows: model, mode, device setup (xN: processes or GPUs; Nt: threads when not all cores); columns: machine.",
                    _flat(tables.pivot_shown(comp, "throughput", machines)), index=False, image="throughput.png"),
            Section("Median time per iteration (s)", "", _flat(tables.pivot_shown(comp, "median_s", machines)),
                    index=False),
        ]
        if (comp["mode"] == "serve").any():
            out.append(Section("Serving latency at batch 1 (ms: p50 / p90 / p99)",
                               "One forward at batch 1 a sample, each call timed alone; percentiles over the calls "
                               "of every process of the figure.", _flat(tables.latency_table(comp, machines)),
                               index=False))
        language = tables.rows_with(comp, "tokens_per_s")
        if len(language):
            out.append(Section("Language models (tokens/s)", "Throughput x tokens per sample.",
                               _flat(tables.pivot_shown(language, "tokens_per_s", machines)), index=False))
        if len(machines) > 1:  # one machine against itself: every speedup is 1
            out.append(Section(f"Speedup against {baseline}", "", _flat(tables.speedup_table(comp, machines)),
                               index=False, image="speedup.png"))
        out.append(Section("Fraction of each machine's measured peak FLOP/s",
                           "Achieved FLOP/s (FlopCounterMode's count / median time) over the machine's own calibrated "
                           "peak (one matmul size; a figure above it is flagged above_peak).",
                           _flat(tables.pivot_shown(comp, "peak_fraction", machines, digits=3)), index=False,
                           image="peak_fraction.png"))
        utilisation = tables.rows_with(comp, "mfu")
        if len(utilisation):
            out.append(Section("Model FLOP/s utilisation (MFU): fraction of the GEMM limit",
                               "Achieved FLOP/s over the machine-limits table's GEMM figure of the same dtype, times "
                               "the GPUs used; n/a where the limit was not measured, or on a CPU at another core "
                               f"count than the figure's. A figure above the limit is flagged {tables.ABOVE_LIMIT}.",
                               _flat(tables.pivot_shown(utilisation, "mfu", machines, digits=3)), index=False))
    compiled_rows = compiled.table(loaded, long)
    if len(compiled_rows):
        out.append(Section("Compiled vs eager (torch.compile)", compiled.TEXT, compiled_rows, index=False))
    out += [Section(**part, index=False) for part in convergence.sections(loaded, comp, baseline)]
    peaks = machine_facts.peaks(loaded)
    if len(peaks):
        out.append(Section("Calibrated peaks", "", peaks, index=False))
    if len(scaling):
        out.append(Section("Multi-process / multi-GPU scaling",
                           "Efficiency = throughput / (processes x single-device throughput of the same model, mode, "
                           "batch per device and, on CPU, threads per process); n/a when that reference is not in "
                           "the run (a --quick run times the CPU at all cores only).",
                           scaling, index=False, image="scaling.png"))
    if len(checks):
        out.append(Section("Conformance", "Passed, failed and crashed checks per machine: a crashed check's "
                           "process died, hung or ran out of memory (CRASH, TIMEOUT, OUT_OF_MEMORY below); a step "
                           "that raised counts as failed, one whose process died as crashed.", checks, index=False))
        not_everywhere = verdicts[(verdicts != "pass").any(axis=1)] if len(verdicts) else verdicts
        out.append(Section("Checks that did not pass on every machine",
                           "" if len(not_everywhere) else "None: every check passed on every machine.",
                           not_everywhere.reset_index() if len(not_everywhere) else None, index=False))
        out += [Section(**part, index=False) for part in ops_report.sections(loaded, machines)]
    flagged = comp[comp["flags"] != ""][["machine", *tables.KEY, "flags"]] if len(comp) else comp
    out.append(Section("Flags", "" if len(flagged) else "No flagged, missing or incomparable rows.",
                       flagged if len(flagged) else None, index=False))
    lost = machine_facts.crashes(loaded)
    if len(lost):
        out.append(Section("Crashes, hangs and out-of-memory", "Each case whose process died (the signal or exit "
                           "status), ran past its budget or out of memory; the run went on from the next case in a "
                           "fresh process. The results file has each one's last lines of stderr.", lost, index=False))
    errors = [{"machine": m.machine_name, "step": e.get("step", ""), "detail": e.get("detail", "")}
              for m in loaded for e in m.errors]
    if errors:
        out.append(Section("Errors during the runs", "", pd.DataFrame(errors), index=False))
    skipped = [{"machine": m.machine_name, "model": k.get("model", k.get("limit", "")), "mode": k.get("mode", ""),
                "setup": k.get("setup", ""), "world_size": k.get("world_size", 1), "reason": k.get("reason", "")}
               for m in loaded for k in m.skipped]
    if skipped:
        out.append(Section("Skipped by design (hardware absent)", "", pd.DataFrame(skipped), index=False))
    out.append(Section("Machines", f"Machines: {', '.join(machines)}.", machine_facts.environments(loaded)))
    return out, comp, scaling


def _flat(pivot: pd.DataFrame) -> pd.DataFrame:
    """A pivot (rows x machines) as a plain table whose first column is its rows: one header line."""
    return pivot.rename_axis(columns=None).reset_index()


def to_markdown(parts: list[Section], title: str = "torchsuite report") -> str:
    lines = [f"# {title}", "", f"Generated {utc_now()}.", ""]
    for part in parts:
        lines += [f"## {part.title}", ""]
        if part.text:
            lines += [part.text, ""]
        if part.table is not None:
            shown = part.table.astype(object).where(part.table.notna(), "n/a")  # "nan" reads like a bug
            lines += [shown.to_markdown(index=part.index), ""]
        if part.image:
            lines += [f"![{part.title}]({part.image})", ""]
    return "\n".join(lines)


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em}
table{border-collapse:collapse;font-size:0.85em;margin-bottom:1em}
th,td{border:1px solid #ccc;padding:0.2em 0.5em;text-align:left}
img{max-width:100%}"""


def to_html(parts: list[Section], image_dir: Path, title: str = "torchsuite report") -> str:
    body = [f"<h1>{html.escape(title)}</h1><p>Generated {html.escape(utc_now())}.</p>"]
    for part in parts:
        body.append(f"<h2>{html.escape(part.title)}</h2>")
        if part.text:
            body.extend(f"<p>{html.escape(p)}</p>" for p in part.text.split("\n\n"))
        if part.table is not None:
            body.append(part.table.to_html(index=part.index, escape=True, na_rep="n/a", border=0))
        if part.image and (image_dir / part.image).exists():
            data = base64.b64encode((image_dir / part.image).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(part.title)}" src="data:image/png;base64,{data}">')
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
