"""Do a run's figures repeat? Rerun one timing plan N times and judge its intervals and the gate.

    python scripts/validate_repeats.py [--runs 5] [--models speech_cnn,cifar10_lenet] [--full]
                                       [--slowdown] [--out DIR]

Each run is `torchsuite run`'s timing plan (no conformance, no convergence) on the CPU, every
figure from fresh processes (suite.timing.processes). It prints, per figure, the medians of the
runs, their spread ((max - min) / min) and the half-width each run claims, then

- coverage: how often one run's claimed 95% interval holds another run's median, over every
  ordered pair of runs and every figure that is unflagged in the first (a calibrated interval
  gives about 83%: the other median has noise of its own);
- the gate on quiet reruns: `torchsuite compare` on every pairing of the runs (0 regressions
  wanted);
- with --slowdown, runs of a planted build interleaved with the quiet ones (quiet, slowed,
  quiet, ...): a copy of this suite whose step does its work once more on a tenth of the batch
  (eval: a forward; train: a forward and backward), about 10% more work. The gate on every
  (quiet, slowed) pairing: how many pairings it calls `regressed`, per figure and in all.
"""
from __future__ import annotations

import argparse
import io
import itertools
import shutil
import statistics
import tempfile
from pathlib import Path

from suite import results
from suite.report.compare import compare
from suite.runner import default_timing_api, run_suite
from suite.timing.processes import Interpreter, WorkerProcess, code_root

PLANTED = {  # the step's code -> the same plus its work again on a tenth of the batch
    "                model(inputs)\n":
        "                model(inputs)\n                model(inputs[:max(1, len(inputs) // 10)])\n",
    "        loss.backward()\n":
        "        loss.backward()\n        with autocast():\n            tenth = max(1, len(inputs) // 10)\n"
        "            extra = loss_fn(model(inputs[:tenth]), labels[:tenth])\n        extra.backward()\n",
}


def planted_copy(root: Path) -> Path:
    """A copy of this suite whose timed step does about 10% more work."""
    shutil.copytree(code_root() / "suite", root / "suite", ignore=shutil.ignore_patterns("__pycache__"))
    steps = root / "suite" / "timing" / "steps.py"
    text = steps.read_text()
    for before, after in PLANTED.items():
        assert text.count(before) == 1, f"the planted slowdown no longer fits steps.py: {before!r}"
        text = text.replace(before, after)
    steps.write_text(text)
    return root


def one_run(out: Path, models: list[str], quick: bool, interpreter: Interpreter | None = None) -> Path:
    timing = default_timing_api()
    if interpreter is not None:
        from dataclasses import replace

        timing = replace(timing, open_worker=lambda requests: WorkerProcess(requests, interpreter))
    return run_suite(device_request="cpu", model_names=models, quick=quick, out_dir=out, report_dir=out / "report",
                     machine_name="repeat", verdict_sources=[], timing=timing, stream=io.StringIO())


def figures(path: Path) -> dict[str, dict]:
    return {r["figure"]: r for r in results.load(path)["records"] if r.get("kind") == "timing"}


def coverage(runs: list[dict[str, dict]]) -> tuple[int, int]:
    held = total = 0
    for first, other in itertools.permutations(runs, 2):
        for name, record in first.items():
            if set(record["flags"]) - {"quick"} or record.get("ci95_low_s") is None or name not in other:
                continue
            total += 1
            held += record["ci95_low_s"] <= other[name]["median_s"] <= record["ci95_high_s"]
    return held, total


def gate(pairs: list[tuple[Path, Path]]) -> list[dict[str, str]]:
    """Each pairing's verdict per figure (compare's rows)."""
    verdicts = []
    for base, new in pairs:
        _, rows = compare(base, new)
        verdicts.append({row.figure: row.verdict for row in rows})
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default="speech_cnn,cifar10_lenet")
    parser.add_argument("--full", action="store_true", help="full sampling rules (default the quick ones)")
    parser.add_argument("--slowdown", action="store_true", help="also run a planted build that does ~10%% more work")
    parser.add_argument("--out", default=None, help="keep the results files here (default a temporary directory)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    out = Path(args.out or tempfile.mkdtemp(prefix="torchsuite-repeats-"))
    models, quick = args.models.split(","), not args.full
    planted = Interpreter(cwd=str(planted_copy(out / "planted"))) if args.slowdown else None
    quiet, slowed = [], []
    for index in range(args.runs):
        quiet.append(one_run(out / f"quiet-{index}", models, quick))
        if planted:
            slowed.append(one_run(out / f"slowed-{index}", models, quick, planted))
        print(f"run {index + 1} of {args.runs} done", flush=True)
    runs = [figures(path) for path in quiet]
    print(f"\n{args.runs} {'quick' if quick else 'full'} runs of {args.models} (results in {out})")
    print(f"{'figure':<55} {'medians (ms)':<42} {'spread':>7} {'claimed':>8}")
    for name in runs[0]:
        medians = [run[name]["median_s"] * 1e3 for run in runs if name in run]
        halves = [run[name]["ci_half_width_fraction"] for run in runs
                  if name in run and run[name]["ci_half_width_fraction"] is not None]
        flagged = sum(bool(set(run[name]["flags"]) - {"quick"}) for run in runs if name in run)
        print(f"{name:<55} {' '.join(f'{m:.3f}' for m in medians):<42} {max(medians) / min(medians) - 1:>7.1%} "
              f"{statistics.median(halves) if halves else float('nan'):>8.1%}" + (f"  ({flagged} flagged)" if flagged else ""))
    held, total = coverage(runs)
    print(f"coverage: a run's 95% interval held another run's median in {held} of {total} pairs "
          f"({held / max(total, 1):.0%}; target >= 80%)")
    quiet_pairs = gate(list(itertools.combinations(quiet, 2)))
    false_alarms = sum(any(v == "regressed" for v in pairing.values()) for pairing in quiet_pairs)
    untrusted = sum(v == "untrusted" for pairing in quiet_pairs for v in pairing.values())
    print(f"gate on quiet reruns: {false_alarms} of {len(quiet_pairs)} pairings had a regression "
          f"(target 0); untrusted rows: {untrusted} of {sum(map(len, quiet_pairs))}")
    if planted:
        slow_figures = [figures(path) for path in slowed]
        ratios = {name: statistics.median(s[name]["median_s"] for s in slow_figures if name in s)
                  / statistics.median(q[name]["median_s"] for q in runs) for name in runs[0]}
        slowed_pairs = gate(list(zip(quiet, slowed)) + list(zip(quiet, slowed[1:] + slowed[:1])))
        caught = sum(any(v == "regressed" for v in pairing.values()) for pairing in slowed_pairs)
        print(f"planted slowdown: {caught} of {len(slowed_pairs)} (quiet, slowed) pairings had a regression (target >= 9 of 10)")
        for name, ratio in ratios.items():
            hits = sum(pairing.get(name) == "regressed" for pairing in slowed_pairs)
            print(f"  {name:<55} slowed/quiet {ratio:.3f}: regressed in {hits} of {len(slowed_pairs)}")


if __name__ == "__main__":
    main()
