"""The figures behind mnist_cnn's mnist5k target: whole held-out curves, then the literal loop.

    python scripts/measure_mnist5k.py [--runs 5] [--epochs 10] [--literal-runs 2]
                                      [--literal-epochs 3] [--out results/]

`torchsuite converge --data mnist5k` stops each run at its target; choosing that target needs
the curve past it. Here the corrected loop runs seeds 0.. to the cap with no stop (target 1.0,
which 1,000 held-out digits do not reach), and the article's literal loop (a fresh Net() at
every step) runs beside it. Both go into one results file (kind "convergence", `loop` says
which; every run is `converged: false` by design, so this file is evidence for
docs/convergence.md and docs/defects.md, not a time-to-accuracy report). It prints, per seed,
the held-out accuracy after each epoch, and for each candidate target the epochs every seed
needs.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from suite.cases.models import CASES, RealTarget
from suite.convergence.runs import train_to_target
from suite.data import MNIST5K
from suite.environment import capture
from suite.results import ResultsStore

NO_STOP = RealTarget(accuracy=1.0, max_epochs=1, source="no stop: the whole curve to the cap",
                     measured_here=True)
CANDIDATES = (0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="corrected-loop seeds, from 0 (default 5)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs each (default 10)")
    parser.add_argument("--literal-runs", type=int, default=2, help="literal-loop seeds (default 2)")
    parser.add_argument("--literal-epochs", type=int, default=3, help="epochs each (default 3)")
    parser.add_argument("--out", default="results", help="directory of the results file (default results/)")
    parser.add_argument("--machine-name", default=None)
    args = parser.parse_args(argv)

    spec, cpu = CASES.get("mnist_cnn"), torch.device("cpu")
    plan = ([("corrected", seed, args.epochs) for seed in range(args.runs)]
            + [("article_literal", seed, args.literal_epochs) for seed in range(args.literal_runs)])
    store = ResultsStore(args.out, capture(args.machine_name), run={
        "command": "scripts/measure_mnist5k.py", "devices": ["cpu"], "models": [spec.name],
        "runs": args.runs, "dtype": "float32", "data": MNIST5K, "first_seed": 0, "quick": False})
    print(f"writing results to {store.path}", file=sys.stderr)
    with store.recording(lambda message: print(message, file=sys.stderr)):
        for loop, seed, epochs in plan:
            target = dataclasses.replace(NO_STOP, max_epochs=epochs)
            record = train_to_target(spec, device=cpu, seed=seed, data=MNIST5K, loop=loop, real_target=target)
            store.add(record)
            curve = record["loss_curve"]
            print(f"{loop} seed {seed}: " + ", ".join(f"{c['accuracy']:.3f}" for c in curve)
                  + f" ({curve[-1]['elapsed_s']:.0f} s)", file=sys.stderr)
    store.finish("complete")
    print(summary(store.records))
    return 0


def summary(records: list[dict]) -> str:
    """Markdown: accuracy after each epoch per run; epochs each corrected seed needs per candidate."""
    lines = ["| loop | seed | held-out accuracy after epoch 1, 2, ... | loss, last epoch | s/epoch |",
             "| --- | --- | --- | --- | --- |"]
    for r in records:
        curve = r["loss_curve"]
        accuracies = ", ".join(f"{c['accuracy']:.3f}" for c in curve)
        lines.append(f"| {r['loop']} | {r['seed']} | {accuracies} | {curve[-1]['loss']:.3f} | "
                     f"{curve[-1]['elapsed_s'] / len(curve):.1f} |")
    corrected = [r for r in records if r["loop"] == "corrected"]
    lines += ["", "| target | epochs to reach it, per seed | every seed? |", "| --- | --- | --- |"]
    for target in CANDIDATES:
        reached = [next((c["epoch"] for c in r["loss_curve"] if c["accuracy"] >= target), None)
                   for r in corrected]
        lines.append(f"| {target:.2f} | {', '.join('-' if e is None else str(e) for e in reached)} | "
                     f"{'yes' if all(e is not None for e in reached) else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
