"""Do a run's figures repeat? Rerun one timing plan N times and judge its intervals and the gate.

    python scripts/validate_repeats.py [--runs 5] [--models speech_cnn,cifar10_lenet] [--full]
                                       [--threads N] [--slowdown] [--ab ROUNDS] [--out DIR]

Each run is `torchsuite run`'s timing plan (no conformance, no convergence) on the CPU, every
figure from fresh processes (suite.timing.processes). It prints, per figure, the medians of the
runs, their spread ((max - min) / min) and the half-width each run claims, then

- coverage: how often one run's claimed 95% interval holds another run's median, over every
  ordered pair of runs and every figure that is unflagged in the first (a calibrated interval
  gives about 83%: the other median has noise of its own);
- the gate on quiet reruns: `torchsuite compare` on every pairing of the runs (0 regressions
  wanted);
- with --slowdown, runs of a planted build interleaved with the quiet ones (quiet, slowed,
  quiet, ...): a copy of this suite whose step also multiplies two matrices sized to about a
  tenth of the step's time, about 10% more work. The gate on every (quiet, slowed) pairing: how
  many pairings it calls `regressed`, per figure and in all, and the measured slowdown.

With --ab ROUNDS it judges `torchsuite ab` instead: --runs sessions of ROUNDS interleaved rounds
(the quick plan's CPU figures of --models, at --threads), each of this code against itself, and
with --slowdown each followed by one of this code against the planted copy: how many quiet
sessions it calls a regression (0 wanted) and how many planted ones it catches.
"""
from __future__ import annotations

import argparse
import io
import itertools
import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from suite import results
from suite.ab import figure_requests, run_ab
from suite.report.compare import compare
from suite.runner import default_timing_api, run_suite
from suite.timing.plan import iter_setups
from suite.timing.processes import Interpreter, WorkerProcess, code_root

PLANTED = '''

_unplanted_build_step = build_step


def build_step(*args, **kwargs):
    """The planted slowdown: the same step, then a matmul of about a tenth of its time."""
    import time

    step = _unplanted_build_step(*args, **kwargs)
    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(10):
        step()
    per_step = (time.perf_counter() - started) / 10
    probe = torch.randn(256, 256)
    started = time.perf_counter()
    for _ in range(20):
        torch.mm(probe, probe)
    per_probe = (time.perf_counter() - started) / 20
    size = max(16, round(256 * (0.1 * per_step / per_probe) ** (1 / 3)))
    extra = torch.randn(size, size)

    def planted_step() -> None:
        step()
        torch.mm(extra, extra)

    return planted_step
'''


def planted_copy(root: Path) -> Path:
    """A copy of this suite whose timed step does about 10% more work: a matmul sized, when the
    step is built, to a tenth of the step's time."""
    shutil.copytree(code_root() / "suite", root / "suite", ignore=shutil.ignore_patterns("__pycache__"))
    steps = root / "suite" / "timing" / "steps.py"
    steps.write_text(steps.read_text() + PLANTED)
    return root


def one_run(out: Path, models: list[str], quick: bool, threads: int | None,
            interpreter: Interpreter | None = None) -> Path:
    timing = default_timing_api()
    if interpreter is not None:
        timing = replace(timing, open_worker=lambda requests: WorkerProcess(requests, interpreter))
    if threads:  # the one-process CPU figures at `threads` (DDP ranks keep theirs)
        timing = replace(timing, iter_setups=lambda devices, quick, models: [
            case._replace(kwargs={**case.kwargs, "threads": threads}) if case.kwargs["setup"] == "cpu" else case
            for case in iter_setups(devices, quick, models)])
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
    """Each pairing's verdict per figure (compare's rows, by their labels)."""
    verdicts = []
    for base, new in pairs:
        _, rows = compare(base, new)
        verdicts.append({row.figure: row.verdict for row in rows})
    return verdicts


def report_quiet(pairs: list[tuple[Path, Path]], label: str) -> None:
    """The gate on pairs of the same build: how many it calls regressed (0 wanted)."""
    verdicts = gate(pairs)
    false_alarms = sum(any(v == "regressed" for v in pairing.values()) for pairing in verdicts)
    untrusted = sum(v == "untrusted" for pairing in verdicts for v in pairing.values())
    print(f"{label}: {false_alarms} of {len(verdicts)} had a regression (target 0); "
          f"untrusted rows: {untrusted} of {sum(map(len, verdicts))}")


def report_slowdown(pairs: list[tuple[Path, Path]], label: str) -> None:
    """The gate on (quiet, slowed) pairs: how many it calls regressed, in all and per figure."""
    verdicts = gate(pairs)
    caught = sum(any(v == "regressed" for v in pairing.values()) for pairing in verdicts)
    print(f"planted slowdown: {caught} of {len(verdicts)} {label} had a regression (target >= 9 of 10)")
    ratios: dict[str, list[float]] = {}
    for base, new in pairs:
        for row in compare(base, new)[1]:
            ratios.setdefault(row.figure, []).append(row.ratio)
    for name, values in ratios.items():
        hits = sum(pairing.get(name) == "regressed" for pairing in verdicts)
        print(f"  {name:<45} slowed/quiet, median over {label} {statistics.median(values):.3f}: "
              f"regressed in {hits} of {len(verdicts)}")


def ab_sessions(args, out: Path, planted: Interpreter | None) -> None:
    this = Interpreter(cwd=str(code_root()))
    requests = figure_requests(args.models.split(","), "cpu", ["cpu"], args.threads)
    quiet, slowed = [], []

    def session(base: Interpreter, new: Interpreter, where: Path) -> tuple[Path, Path]:
        header, _ = run_ab(base, new, requests, where, rounds=args.ab)  # and more rounds while undecided
        return Path(header["baseline"]["file"]), Path(header["new"]["file"])

    for index in range(args.runs):
        quiet.append(session(this, this, out / f"ab-quiet-{index}"))
        if planted:
            slowed.append(session(this, planted, out / f"ab-slowed-{index}"))
        print(f"session {index + 1} of {args.runs} done", flush=True)
    print(f"\n{args.runs} ab sessions of {args.ab} rounds, {args.models}, threads: {args.threads or 'all cores'} "
          f"(results in {out})")
    report_quiet(quiet, "quiet sessions (this code against itself)")
    if planted:
        report_slowdown(slowed, "sessions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default="speech_cnn,cifar10_lenet")
    parser.add_argument("--full", action="store_true", help="full sampling rules (default the quick ones)")
    parser.add_argument("--slowdown", action="store_true", help="also run a planted build that does ~10%% more work")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the CPU figures (default all cores)")
    parser.add_argument("--ab", type=int, default=None, metavar="ROUNDS",
                        help="judge torchsuite ab: --runs sessions of ROUNDS rounds instead of whole runs")
    parser.add_argument("--out", default=None, help="keep the results files here (default a temporary directory)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    out = Path(args.out or tempfile.mkdtemp(prefix="torchsuite-repeats-"))
    models, quick = args.models.split(","), not args.full
    planted = Interpreter(cwd=str(planted_copy(out / "planted"))) if args.slowdown else None
    if args.ab:
        ab_sessions(args, out, planted)
        return
    quiet, slowed = [], []
    for index in range(args.runs):
        quiet.append(one_run(out / f"quiet-{index}", models, quick, args.threads))
        if planted:
            slowed.append(one_run(out / f"slowed-{index}", models, quick, args.threads, planted))
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
    report_quiet(list(itertools.combinations(quiet, 2)), "gate on quiet reruns, pairings")
    if planted:
        report_slowdown(list(zip(quiet, slowed)) + list(zip(quiet, slowed[1:] + slowed[:1])), "pairings")


if __name__ == "__main__":
    main()
