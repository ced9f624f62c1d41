"""Benchmark commits of this repository with asv, compare them, and publish the site.

    python scripts/asv_commits.py BASE NEW [--out .asv/commits] [--machine NAME] [--full]
                                  [--bench REGEX] [--factor 1.05]

Each commit is checked out into a temporary git worktree and benchmarked by asv in the
*existing* environment (this interpreter, with torch already installed) with
`--set-commit-hash`: the worktree's `benchmarks/` and its `suite` package (first on the
benchmarks' sys.path, through ASV_PYTHONPATH) are that commit's, the Python stack is this one. asv's own alternative, a virtualenv
per commit built from asv.conf.json's matrix, reinstalls torch (several GB) for every
environment; `existing` costs nothing but the benchmarks. Then `asv compare BASE NEW` and
`asv publish` run on the shared results, and the result files are printed, for
`torchsuite compare` (asv keeps the raw samples: `--record-samples`; asv's own `--quick`
would keep one). By default the core's quick settings (TORCHSUITE_QUICK=1); --full for full
figures. Worktrees are removed at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def asv_config(worktree: Path, out: Path) -> dict:
    lines = (REPO / "asv.conf.json").read_text().splitlines()
    config = json.loads("\n".join(line for line in lines if not line.strip().startswith("//")))
    config.update(repo=str(REPO), benchmark_dir=str(worktree / "benchmarks"),
                  results_dir=str(out / "results"), html_dir=str(out / "html"), env_dir=str(out / "env"))
    return config


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"asv_commits: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def asv(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "asv", *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        sys.exit(f"asv_commits: asv {args[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--out", default=str(REPO / ".asv" / "commits"), help="results, html and config (default .asv/commits)")
    parser.add_argument("--machine", default="torchsuite-commits")
    parser.add_argument("--bench", default=r"Models\.(time_iteration|track_throughput)", help="asv --bench regex")
    parser.add_argument("--factor", default="1.05", help="asv compare --factor (default 1.05: 5%%)")
    parser.add_argument("--full", action="store_true", help="full figures instead of the core's quick settings")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commits = [git("rev-parse", "--verify", f"{ref}^{{commit}}") for ref in (args.base, args.new)]
    # asv keeps its machine file in $HOME: a private one leaves the user's alone.
    env = {**os.environ, "HOME": str(out)}
    if not args.full:
        env["TORCHSUITE_QUICK"] = "1"
    timings = {}
    with tempfile.TemporaryDirectory(prefix="asv-worktrees-") as scratch:
        for commit in commits:
            worktree = Path(scratch) / commit[:12]
            git("worktree", "add", "--detach", str(worktree), commit)
            try:
                config = out / f"asv.conf.{commit[:12]}.json"
                config.write_text(json.dumps(asv_config(worktree, out), indent=1))
                # asv drops PYTHONPATH from the benchmarks' environment and puts ASV_PYTHONPATH
                # first on their sys.path instead: the commit's `suite` wins over the installed one.
                run_env = {**env, "ASV_PYTHONPATH": os.pathsep.join(filter(None, [str(worktree), env.get("ASV_PYTHONPATH")]))}
                asv(["machine", "--yes", "--machine", args.machine, "--config", str(config)], run_env)
                started = time.monotonic()
                asv(["run", "--config", str(config), "-E", f"existing:{sys.executable}", "--set-commit-hash",
                     commit, "--machine", args.machine, "--bench", args.bench, "--record-samples",
                     "--show-stderr"], run_env)
                timings[commit] = time.monotonic() - started
            finally:
                git("worktree", "remove", "--force", str(worktree))
    config = out / f"asv.conf.{commits[1][:12]}.json"
    compared = asv(["compare", "--config", str(config), "--machine", args.machine, "--factor", args.factor,
                    "--split", *commits], env)
    print(compared.stdout)
    asv(["publish", "--config", str(config)], env)
    for commit in commits:
        print(f"asv run {commit[:12]}: {timings[commit]:.0f} s")
    for commit in commits:
        (result,) = [p for p in (out / "results" / args.machine).glob(f"{commit[:8]}-*.json")]
        print(f"results {commit[:12]}: {result}")
    print(f"site: {out / 'html'} (python scripts/asv_offline.py {out / 'html'} makes it work offline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
