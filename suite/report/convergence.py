"""The report's time-to-accuracy part: scores per model and machine, each run, speedups, loss curves.

Scores come from suite.convergence.score (the same rule as the CLI's summary). Two runs of one
machine: the later file's runs of a (model, device, dtype, data) group stand, as for timings.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from suite.convergence.score import (GROUP_KEY, STEPS_TOLERANCE_FRACTION, STEPS_TOLERANCE_INTERVALS, score,
                                     steps_disagree, steps_tolerance)

# A machine's speedup in time to target and its speedup in throughput (train, same device and
# dtype) "disagree" when one is more than this factor of the other, either way.
DISAGREE_FACTOR = 1.25

HOW_TO_READ = (
    "Time to target is MLPerf's measure: train from scratch with the article's loop (corrected), batch "
    "size and optimizer, evaluate on the held-out split every K steps (synthetic data) or every epoch "
    "(real data), and stop at the target accuracy; the clock starts at the first batch and runs through "
    "the evaluations. Each seed is one run. The score is the mean after dropping the fastest and the "
    "slowest run; a run that did not reach the target within its cap counts as the slowest, so one is "
    "reported and dropped, and two invalidate the score. Steps to target are scored the same way. "
    "With the same seeds, two machines train on the same batches from the same initial weights, so on "
    "the synthetic task their steps to target differ only by numerics: a score further than "
    f"{STEPS_TOLERANCE_FRACTION:.0%} of the reference's (and more than {STEPS_TOLERANCE_INTERVALS} "
    "evaluation intervals) from the reference machine's is flagged as a numerics difference. bfloat16 is "
    "compared with bfloat16 runs of the reference, and beside its own machine's float32 runs (expected to "
    "differ: docs/convergence.md says by how much).")


def _groups(loaded) -> dict[tuple, list[dict]]:
    """(machine, *GROUP_KEY) -> that group's runs from the last file that has any."""
    out: dict[tuple, list[dict]] = {}
    for m in loaded:
        mine: dict[tuple, list[dict]] = {}
        for record in m.convergence:
            mine.setdefault((m.machine_name, *(record.get(k) for k in GROUP_KEY)), []).append(record)
        out.update(mine)
    return out


def has_convergence(loaded) -> bool:
    return any(m.convergence for m in loaded)


def reached_summary(loaded, machine: str) -> str:
    """For the report's summary: how many of a machine's runs reached their target."""
    records = [r for key, runs in _groups(loaded).items() if key[0] == machine for r in runs]
    return f"{sum(bool(r.get('converged')) for r in records)}/{len(records)}" if records else "none"


def runs_table(loaded) -> pd.DataFrame:
    rows = []
    for (machine, model, device, dtype, data), records in _groups(loaded).items():
        for r in records:
            rows.append({"machine": machine, "model": model, "device": device, "dtype": dtype,
                         "data": data, "seed": r.get("seed"), "loop": r.get("loop", "corrected"),
                         "converged": bool(r.get("converged")),
                         "time to target (s)": _rounded(r.get("time_to_target_s"), 3),
                         "steps to target": r.get("steps_to_target"),
                         "epochs to target": r.get("epochs_to_target") if data != "synthetic" else None,
                         "final accuracy": _rounded(r.get("final_accuracy"), 4), "target": r.get("target"),
                         "steps run": r.get("steps_run")})
    frame = pd.DataFrame(rows)
    return frame.dropna(axis=1, how="all") if len(frame) else frame


def _rounded(value, digits: int):
    return round(value, digits) if isinstance(value, (int, float)) else None


def _reference_candidates(scores: dict, model: str, dtype: str, data: str, baseline: str) -> list:
    """The groups a machine's steps may be compared with: the baseline machine's of the same model,
    dtype and data (the caller prefers the one on the same device)."""
    return [(key, s) for key, s in scores.items()
            if key[0] == baseline and key[1] == model and key[3] == dtype and key[4] == data]


def scores_table(loaded, baseline: str) -> pd.DataFrame:
    groups = _groups(loaded)
    scores = {key: (score(records), records) for key, records in groups.items()}
    rows = []
    for key, (result, records) in scores.items():
        machine, model, device, dtype, data = key
        refs = _reference_candidates(scores, model, dtype, data, baseline)
        same_device = [r for r in refs if r[0][2] == device]
        ref = (same_device or refs or [None])[0]
        eval_every = records[0].get("eval_every")
        rows.append({
            "machine": machine, "model": model, "device": device, "dtype": dtype, "data": data,
            "target": records[0].get("target"),
            "converged": f"{result.converged}/{result.runs}",
            "time to target (s)": _rounded(result.time_to_target_s, 3),
            "steps to target": _rounded(result.steps_to_target, 1),
            "score": result.note,
            "steps vs reference": _steps_verdict(key, result, ref, eval_every, data, records),
            "steps vs float32": _against_float32(scores, key, result),
        })
    frame = pd.DataFrame(rows)
    if len(frame) and (frame["dtype"] != "bfloat16").all():
        frame = frame.drop(columns=["steps vs float32"])
    return frame


def _seeds(records) -> set:
    return {r.get("seed") for r in records}


def _steps_verdict(key, result, ref, eval_every, data, records) -> str:
    if data != "synthetic":
        return "n/a (real data)"
    if ref is None:
        return "no reference"
    ref_key, (ref_result, ref_records) = ref
    if ref_key == key:
        return "reference"
    if _seeds(records) != _seeds(ref_records):
        return "other seeds: not compared"
    if not (result.valid and ref_result.valid):
        return "n/a (invalid score)"
    tolerance = steps_tolerance(ref_result.steps_to_target, eval_every)
    change = (result.steps_to_target - ref_result.steps_to_target) / ref_result.steps_to_target
    if steps_disagree(result.steps_to_target, ref_result.steps_to_target, eval_every):
        return f"NUMERICS DIFFER: {change:+.0%} (tolerance ±{tolerance:.0f} steps)"
    return f"agrees: {change:+.0%} (tolerance ±{tolerance:.0f} steps)"


def _against_float32(scores, key, result) -> str:
    machine, model, device, dtype, data = key
    if dtype != "bfloat16":
        return ""
    float32 = scores.get((machine, model, device, "float32", data))
    if float32 is None or not (float32[0].valid and result.valid):
        return "n/a"
    return f"{(result.steps_to_target - float32[0].steps_to_target) / float32[0].steps_to_target:+.0%} steps"


def speedups_table(loaded, comp: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per group and machine: speedup in time to target beside speedup in training throughput."""
    scores = {key: score(records) for key, records in _groups(loaded).items()}
    rows = []
    for (machine, model, device, dtype, data), result in scores.items():
        base = scores.get((baseline, model, device, dtype, data))
        tta = (base.time_to_target_s / result.time_to_target_s
               if base and base.valid and result.valid and result.time_to_target_s else None)
        throughput = _throughput_speedup(comp, machine, model, device, dtype)
        verdict = ""
        if tta and throughput:
            ratio = tta / throughput
            verdict = "DISAGREE" if not (1 / DISAGREE_FACTOR <= ratio <= DISAGREE_FACTOR) else "agree"
        rows.append({"machine": machine, "model": model, "device": device, "dtype": dtype, "data": data,
                     "time-to-target speedup": _rounded(tta, 3), "throughput speedup": _rounded(throughput, 3),
                     "the two": verdict or "n/a"})
    return pd.DataFrame(rows)


def _throughput_speedup(comp: pd.DataFrame, machine, model, device, dtype):
    if comp is None or not len(comp):
        return None
    rows = comp[(comp["machine"] == machine) & (comp["model"] == model) & (comp["mode"] == "train")
                & (comp["setup"] == device) & (comp["dtype"] == dtype)
                & ~comp["channels_last"].astype(bool) & (comp["threads_setting"] == "all") & ~comp["missing"]]
    values = pd.to_numeric(rows["speedup"], errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else None


def sections(loaded, comp: pd.DataFrame, baseline: str) -> list[dict]:
    """The report's sections (title, text, table, image) for the time-to-accuracy records, if any."""
    if not has_convergence(loaded):
        return []
    machines = list(dict.fromkeys(m.machine_name for m in loaded))
    out = [{"title": "Time to accuracy", "text": HOW_TO_READ, "table": scores_table(loaded, baseline),
            "image": "convergence.png"}]
    if len(machines) > 1:
        out.append({"title": f"Speedup in time to target beside speedup in throughput (against {baseline})",
                    "text": "Throughput speedup: the same model's training timing (mode train, one device, "
                            "all cores, the run's dtype) from the timing tables above; n/a when the "
                            "run has no such timing. The timings use the device's batch size and the "
                            "convergence runs the article's 100, so on GPUs the two measure different work. "
                            f"\"DISAGREE\": one is more than {DISAGREE_FACTOR}x the other, either way: the "
                            "machine computes faster than it trains (or the reverse), say from a numerics "
                            "difference, evaluation cost or start-up.",
                    "table": speedups_table(loaded, comp, baseline)})
    out.append({"title": "Convergence runs", "text": "One row per seeded run.", "table": runs_table(loaded)})
    return out


def write_plot(loaded, directory: Path) -> Path | None:
    """Training loss and held-out accuracy against steps, one column per model; one colour per
    machine, device, dtype and data; one line per seed."""
    groups = _groups(loaded)
    if not groups:
        return None
    from suite.report.plots import _save, pyplot

    plt = pyplot()
    models = list(dict.fromkeys(key[1] for key in groups))
    series = list(dict.fromkeys((k[0], k[2], k[3], k[4]) for k in groups))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    try:
        for column, model in enumerate(models):
            loss_ax, acc_ax = axes[0][column], axes[1][column]
            for (machine, m, device, dtype, data), records in groups.items():
                if m != model:
                    continue
                colour = colours[series.index((machine, device, dtype, data)) % len(colours)]
                label = f"{machine} {device} {dtype} {data}"
                for i, r in enumerate(records):
                    curve = [c for c in r.get("loss_curve") or [] if c.get("step") is not None]
                    steps = [c["step"] for c in curve]
                    style = "-" if r.get("converged") else ":"
                    loss_ax.plot(steps, [c.get("loss") for c in curve], style, color=colour, linewidth=1,
                                 alpha=0.8, label=label if i == 0 else None)
                    acc_ax.plot(steps, [c.get("accuracy") for c in curve], style, color=colour, linewidth=1,
                                alpha=0.8, label=label if i == 0 else None)
                target = records[0].get("target")
                if isinstance(target, (int, float)):
                    acc_ax.axhline(target, color="grey", linewidth=0.8, linestyle="--")
            loss_ax.set_title(f"{model}: training loss")
            loss_ax.set_yscale("log")
            acc_ax.set_title(f"{model}: held-out accuracy (dashed: target)")
            acc_ax.set_xlabel("step")
            acc_ax.set_ylim(0, 1)
            loss_ax.legend(fontsize=7)
        fig.suptitle("Convergence runs (dotted: did not reach the target)")
        return _save(fig, directory / "convergence.png")
    finally:
        plt.close(fig)
