"""`torchsuite ab BASE NEW`: is my change slower? Two builds timed interleaved on one machine.

BASE and NEW are git refs of the code under test (this repository by default, `--repo` for
another checkout of it): each is checked out into a temporary worktree and its own `suite`
package times the figures, so a change to a model, a step or the timing core is what is
measured. Or they are two Python environments (`--base-python`, `--new-python`: two torch
builds side by side) timing this checkout's code. Rounds alternate fresh processes A B B A A B
..., each timing every figure (suite.timing.processes), so that the machine's slow minutes fall
on both sides alike. Each side's figures are merged across its processes and written as a
results file; the verdicts are `torchsuite compare`'s (suite.report.compare) on those two files.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from suite.errors import SuiteError
from suite.timing.processes import Interpreter, WorkerError, WorkerProcess, code_root, merge_figures, round_order

DEFAULT_ROUNDS = 4


@contextlib.contextmanager
def builds_from_refs(base: str, new: str, repo: str | None = None):
    """(base, new) Interpreters running this Python on worktrees of two git refs; removed after."""
    repo_path = Path(repo or code_root()).resolve()
    if not (repo_path / ".git").exists():
        raise SuiteError(f"{repo_path} is not a git checkout (--repo)")
    scratch = Path(tempfile.mkdtemp(prefix="torchsuite-ab-"))
    trees = []
    try:
        for side, ref in (("base", base), ("new", new)):
            tree = scratch / side
            done = subprocess.run(["git", "-C", str(repo_path), "worktree", "add", "--detach", str(tree), ref],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["git worktree failed"])[-1]
                raise SuiteError(f"cannot check out {ref!r} of {repo_path}: {last}")
            trees.append(tree)
            if not (tree / "suite" / "timing" / "worker.py").exists():
                raise SuiteError(f"{ref!r} has no suite/timing/worker.py: it predates torchsuite ab")
        commits = [_git(repo_path, "rev-parse", ref) for ref in (base, new)]
        yield tuple(Interpreter(cwd=str(tree), label=f"{ref} ({commit[:10]})")
                    for tree, ref, commit in zip(trees, (base, new), commits))
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", str(repo_path), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()


def builds_from_pythons(base_python: str, new_python: str) -> tuple[Interpreter, Interpreter]:
    """(base, new) Interpreters: two Python environments running this checkout's code."""
    found = []
    for python in (base_python, new_python):
        path = shutil.which(python)
        if path is None:
            raise SuiteError(f"no Python interpreter {python!r}")
        found.append(Interpreter(python=path, cwd=str(code_root()), label=python))
    return found[0], found[1]


def figure_requests(models: list[str] | None, device: str, setups: list[str], threads: int | None = None) -> list[dict]:
    """The quick plan's figures of `models` on `device` in `setups` (per process: quick sampling),
    at `threads` torch threads where given (per rank for DDP)."""
    from suite.timing.plan import iter_setups

    cases = [c._replace(kwargs={**c.kwargs, **({"threads": threads} if threads else {})})
             for c in iter_setups([device], True, models) if c.kwargs.get("setup") in setups]
    if not cases:
        raise SuiteError(f"no figure of {', '.join(models or ['every model'])} in setups {', '.join(setups)}")
    skipped = [c for c in cases if c.skip_reason]
    if skipped:
        raise SuiteError(f"cannot time {skipped[0].id}: {skipped[0].skip_reason}")
    return [{"figure": c.id, "model": c.model, "mode": c.mode, "kwargs": c.kwargs} for c in cases]


def run_ab(base: Interpreter, new: Interpreter, requests: list[dict], rounds: int, out_dir,
           say=lambda line: None) -> tuple[Path, Path]:
    """Time both builds in alternating fresh processes; the two results files (base, new)."""
    from suite.environment import capture
    from suite.results import ResultsStore

    if rounds < 2:
        raise SuiteError(f"--rounds must be at least 2 (a figure's spread needs two processes), got {rounds}")
    sides = {"base": base, "new": new}
    collected = {side: {r["figure"]: [] for r in requests} for side in sides}
    for round_index in range(rounds):
        order = ("base", "new") if round_index % 2 == 0 else ("new", "base")
        for side in order:
            worker = WorkerProcess(round_order(requests, round_index), sides[side])
            try:
                for index, request in enumerate(worker.requests):
                    try:
                        collected[side][request["figure"]].append(worker.result(index))
                    except WorkerError as err:
                        say(f"{side} round {round_index + 1}: {request['figure']}: {err}")
            finally:
                worker.close()
        say(f"round {round_index + 1} of {rounds} done ({' then '.join(order)})")
    paths = []
    for side, interpreter in sides.items():
        merged = merge_figures(collected[side])
        if not merged:
            raise SuiteError(f"{side} ({interpreter.label}) timed no figure; see the lines above")
        machine = capture(f"ab-{side}")
        first = next(iter(merged.values()))
        machine.update(torch=first.get("torch"), suite_commit=interpreter.label)
        store = ResultsStore(Path(out_dir) / side, machine, run={"ab": side, "build": interpreter.label,
                                                                  "python": interpreter.python, "rounds": rounds})
        for figure, record in merged.items():
            store.add({**record, "figure": figure})
        store.finish("complete")
        paths.append(store.path)
    return paths[0], paths[1]
