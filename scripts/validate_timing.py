"""Check the timing core against independent measurements of LeNet's CPU train step.

Prints the acceptance figures:
  agreement  |median over rounds of core / independent Timer - 1|            (target < 3%)
  overhead   what the core adds to each iteration over a bare loop            (target < 1%),
             measured twice: directly, as the core's own per-iteration cost on an empty step
             over the LeNet step's median (exact, hardly touched by load), and statistically,
             as the median over rounds of core / bare-loop - 1 (as noisy as the machine)

The independent step is written here by hand (not built by suite.timing), timed by a plain
torch.utils.benchmark.Timer and by a bare perf_counter loop. Like the core's, it is built
afresh from the same seed for each measurement, so all three time the same initial weights
on a newly allocated model. Each round measures the three in a palindrome (a b c c b a, who
goes first rotating from round to round) and averages each method's two figures, so a change
in machine load that is linear over the round cancels; one round is run first and dropped
(the process's first allocations, thread-pool start, peak calibration). Agreement is paired:
the median over rounds of core / independent, taken within one round. Usage:
    python scripts/validate_timing.py [--threads N] [--rounds 8] [--min-run-time 0.5]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import torch

from suite import time_model  # first: it quiets torch.utils.benchmark's import-time CUDA notice
from torch.utils.benchmark import Timer  # noqa: I001
from suite.cases.models import CASES
from suite.threads import torch_threads, usable_cores
from suite.timing.measure import measure

MODEL = "cifar10_lenet"


def hand_written_train_step(batch_size: int):
    spec = CASES.get(MODEL)
    model = spec.build(seed=0)
    optimizer = spec.make_optimizer(model.parameters())
    inputs, labels = spec.example_batch(batch_size)

    def step():
        optimizer.zero_grad(set_to_none=True)
        spec.loss_fn(model(inputs), labels).backward()
        optimizer.step()

    return step


def independent_timer_median(step, threads: int, min_run_time: float) -> float:
    timer = Timer("step()", globals={"step": step}, num_threads=threads)
    timer.timeit(5)  # warm-up
    return timer.blocked_autorange(min_run_time=min_run_time).median


def bare_loop_median(step, threads: int, min_run_time: float) -> float:
    """Each step timed alone with perf_counter, garbage collection off as timeit (and Timer) has it."""
    gc.disable()
    try:
        with torch_threads(threads):
            for _ in range(5):
                step()
            per_step, spent = [], 0.0
            while spent < min_run_time:
                start = time.perf_counter()
                step()
                elapsed = time.perf_counter() - start
                per_step.append(elapsed)
                spent += elapsed
        return statistics.median(per_step)
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=CASES.get(MODEL).batch_size("cpu"))
    parser.add_argument("--quick", action="store_true",
                        help="the core's quick sampling rules: is a quick figure within 10%% of the independent Timer?")
    args = parser.parse_args()
    if args.rounds < 1 or args.min_run_time <= 0:
        parser.error("--rounds must be at least 1 and --min-run-time above 0")

    print(f"{MODEL} train step, batch {args.batch_size}, {args.threads} threads, "
          f"{args.rounds} rounds of 6 measurements of {args.min_run_time:g} s each after a "
          f"dropped warm-up round; load average before: {os.getloadavg()[0]:.2f}")
    results = {"core": [], "independent": [], "bare": []}
    walls, records = [], []

    def measure_once(method: str) -> float:
        if method == "core":
            started = time.perf_counter()
            records.append(time_model(MODEL, mode="train", threads=args.threads,
                                      batch_size=args.batch_size, min_run_time=args.min_run_time,
                                      quick=args.quick))
            walls.append(time.perf_counter() - started)
            return records[-1]["median_s"]
        step = hand_written_train_step(args.batch_size)
        if method == "independent":
            return independent_timer_median(step, args.threads, args.min_run_time)
        return bare_loop_median(step, args.threads, args.min_run_time)

    for round_index in range(-1, args.rounds):  # round -1 warms the process up, then is dropped
        methods = list(results)
        methods = methods[round_index % 3:] + methods[:round_index % 3]  # rotate who goes first
        # A palindrome (a b c c b a): each method's two measurements average to the same moment,
        # so a change in machine load that is linear over the round cancels out.
        this_round = {method: [] for method in methods}
        for method in methods + methods[::-1]:
            this_round[method].append(measure_once(method))
        if round_index < 0:
            walls.clear()
            records.clear()
            continue
        for method, values in this_round.items():
            results[method].append(statistics.fmean(values))
        print(f"  round {round_index + 1}: core {results['core'][-1] * 1e3:.3f} ms, independent "
              f"Timer {results['independent'][-1] * 1e3:.3f} ms, bare loop "
              f"{results['bare'][-1] * 1e3:.3f} ms (core noisy: "
              f"{sum(r['noisy'] for r in records[-2:])} of 2)")
    core, independent, bare = results["core"], results["independent"], results["bare"]
    record = records[-1]

    core_ms, independent_ms, bare_ms = (statistics.median(v) * 1e3 for v in (core, independent, bare))
    paired_ratio = statistics.median(c / i for c, i in zip(core, independent))
    agreement = abs(paired_ratio - 1)
    paired_overhead = statistics.median(c / b - 1 for c, b in zip(core, bare))
    empty = measure(lambda: None, threads=args.threads, devices=[torch.device("cpu")],
                    min_run_time=args.min_run_time, warmup_steps=5, min_samples=10,
                    time_cap_s=args.min_run_time)
    clock_pair_s = statistics.median(-time.perf_counter() + time.perf_counter() for _ in range(10_000))
    # per iteration: the Timer loop and call (empty step), plus one clock pair per block
    core_cost_s = statistics.median(empty.samples) + clock_pair_s / record["steps_per_sample"]
    overhead = core_cost_s / (core_ms / 1e3)
    print(f"medians over rounds: core {core_ms:.3f} ms, independent Timer {independent_ms:.3f} ms, "
          f"bare loop {bare_ms:.3f} ms")
    print(f"agreement: median over rounds of core / independent Timer = {paired_ratio:.4f}, "
          f"a difference of {agreement:.2%} (target < 3%): {'PASS' if agreement < 0.03 else 'FAIL'}")
    print(f"  (medians taken apart: {abs(core_ms - independent_ms) / independent_ms:.2%})")
    print(f"overhead: the core's own cost per iteration (empty step + clock reads per "
          f"{record['steps_per_sample']}-step block) {core_cost_s * 1e9:.0f} ns, "
          f"{overhead:.4%} of the step (target < 1%): {'PASS' if overhead < 0.01 else 'FAIL'}")
    print(f"overhead cross-check: median over rounds of core / bare loop - 1 = {paired_overhead:+.2%} "
          f"(noise of this machine included)")
    print(f"time_model wall time per call: {statistics.median(walls):.2f} s for "
          f"{args.min_run_time:g} s of timed iterations; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
