"""The items a bisect walks through, in order, and the interpreter that runs the code of each.

Commits: the first-parent history from --good to --bad (`git bisect --first-parent`), of this
repository or --repo. Each is checked out into a worktree when first needed (suite.ab.Checkouts)
and comes first on its workers' path, as scripts/asv_commits.py puts a commit first with
ASV_PYTHONPATH: the commit's modules, and its own `suite` package where it has one, are what
runs; torch and everything else are this environment's.

Python environments: --pythons, each a virtual environment's directory or an interpreter,
running the code under test as it is in the working tree (this checkout, or --repo).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from suite.ab import Checkouts
from suite.errors import SuiteError
from suite.timing.processes import Interpreter, code_root


@dataclass(frozen=True)
class Item:
    name: str  # the full commit hash, or the interpreter's path
    label: str  # how a reader knows it: short hash and subject, or the path given

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label}


class CommitBuilds:
    """The commits from good (first) to bad (last), each checked out when first asked for."""

    kind = "commit"

    def __init__(self, checkouts: Checkouts, good: str, bad: str):
        self.checkouts = checkouts
        good_commit, bad_commit = checkouts.commit(good), checkouts.commit(bad)
        if good_commit == bad_commit:
            raise SuiteError(f"--good {good} and --bad {bad} are the same commit")
        ancestor = subprocess.run(["git", "-C", str(checkouts.repo), "merge-base", "--is-ancestor",
                                   good_commit, bad_commit], capture_output=True)
        if ancestor.returncode != 0:
            raise SuiteError(f"--good {good} is not an ancestor of --bad {bad}")
        log = subprocess.run(["git", "-C", str(checkouts.repo), "log", "--first-parent", "--reverse",
                              "--format=%H %s", f"{good_commit}..{bad_commit}"], capture_output=True, text=True)
        later = [line.split(" ", 1) + [""] for line in log.stdout.splitlines() if line.strip()]
        subject = subprocess.run(["git", "-C", str(checkouts.repo), "log", "-1", "--format=%s", good_commit],
                                 capture_output=True, text=True).stdout.strip()
        self.items = [Item(good_commit, f"{good_commit[:10]} {_short(subject)}".strip())]
        self.items += [Item(commit, f"{commit[:10]} {_short(text)}".strip()) for commit, text, *_ in later]
        self.used: set[int] = set()

    @property
    def source(self) -> str:
        return str(self.checkouts.repo)

    def interpreter(self, index: int) -> Interpreter:
        self.used.add(index)
        item = self.items[index]
        return Interpreter(cwd=str(self.checkouts.tree(item.name)), label=item.name[:10])


class PythonBuilds:
    """Python environments in order, the first good and the last bad, on one working tree."""

    kind = "environment"

    def __init__(self, pythons: list[str], repo: str | None = None):
        if len(pythons) < 2:
            raise SuiteError(f"--pythons needs at least two environments (the good one first, the bad one last), "
                             f"got {len(pythons)}")
        self.root = Path(repo).resolve() if repo else code_root()
        if not self.root.is_dir():
            raise SuiteError(f"no directory {self.root} (--repo)")
        self.items = [Item(resolve_python(p), p) for p in pythons]
        self.used: set[int] = set()
        # A --repo of the user's own code: this checkout's `suite` must still be importable there.
        self.env = ({"PYTHONPATH": os.pathsep.join(filter(None, [str(code_root()), os.environ.get("PYTHONPATH")]))}
                    if repo else {})

    @property
    def source(self) -> str:
        return str(self.root)

    def interpreter(self, index: int) -> Interpreter:
        self.used.add(index)
        item = self.items[index]
        return Interpreter(python=item.name, cwd=str(self.root), env=self.env, label=item.label)


def _short(subject: str, limit: int = 60) -> str:
    return subject if len(subject) <= limit else subject[: limit - 3] + "..."


def resolve_python(given: str) -> str:
    """The interpreter of a virtual environment's directory, or of a path or command name."""
    path = Path(given).expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.exists():
                return str(candidate)
        raise SuiteError(f"{given} is a directory with no bin/python: not a virtual environment")
    found = shutil.which(str(path))
    if found is None:
        raise SuiteError(f"no Python interpreter {given!r}")
    return found
