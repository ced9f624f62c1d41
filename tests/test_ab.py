"""`torchsuite ab`: two builds timed in alternating fresh processes find a planted slowdown."""
import json
import shutil
import subprocess
import sys

import pytest

from suite.cli import main
from suite.timing.processes import code_root

# A build whose every step does its work twice: the planted slowdown.
TWICE = '''

_once = build_step


def build_step(*args, **kwargs):
    step = _once(*args, **kwargs)

    def twice() -> None:
        step()
        step()

    return twice
'''
AB = ["--models", "speech_cnn", "--setups", "cpu", "--json"]  # defaults: one thread, four rounds and more while undecided


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A scratch repository of the code under test: a base commit and one whose step runs twice."""
    repo = tmp_path_factory.mktemp("history")
    shutil.copytree(code_root() / "suite", repo / "suite", ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    steps = repo / "suite" / "timing" / "steps.py"
    steps.write_text(steps.read_text() + TWICE)
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "every step twice")
    return repo


def verdicts(capsys) -> dict:
    rows = json.loads(capsys.readouterr().out)["rows"]
    return {row["figure"]: row for row in rows}


# 45 s on 2 cores: slow. The default run keeps A/B sessions end to end through tests/test_bisect.py's
# speed bisection, which runs them over git refs in the same way.
@pytest.mark.slow
def test_two_git_refs_alternate_and_the_slower_one_regresses(history, tmp_path, capsys):
    assert main(["ab", "HEAD~1", "HEAD", "--repo", str(history), "--out", str(tmp_path), *AB]) == 1
    rows = verdicts(capsys)
    # judged on the session's rounds: the same session id on both sides, each process with its round
    assert {r["verdict"] for r in rows.values()} == {"regressed"}, rows
    assert all(1.4 < r["ratio"] < 3 and "interleaved rounds" in r["why"] for r in rows.values())
    worktrees = subprocess.run(["git", "-C", str(history), "worktree", "list"], capture_output=True, text=True)
    assert worktrees.stdout.count("\n") == 1  # the scratch worktrees are gone
    assert (tmp_path / "compare.txt").exists() and len(list((tmp_path / "base").glob("*.json"))) == 1


@pytest.mark.slow
def test_two_python_environments_the_slower_one_regresses(tmp_path, capsys):
    # The "new environment" is this Python with a sitecustomize that makes every conv run twice.
    slow_site = tmp_path / "site"
    slow_site.mkdir()
    (slow_site / "sitecustomize.py").write_text(
        "import torch.nn as nn\n_f = nn.Conv2d.forward\n"
        "def twice(self, x):\n    _f(self, x)\n    return _f(self, x)\nnn.Conv2d.forward = twice\n")
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(f'#!/bin/sh\nPYTHONPATH="{slow_site}:$PYTHONPATH" exec {sys.executable} "$@"\n')
    slow_python.chmod(0o755)
    status = main(["ab", "--base-python", sys.executable, "--new-python", str(slow_python), "--out", str(tmp_path / "ab"), *AB])
    rows = verdicts(capsys)
    assert status == 1 and {r["verdict"] for r in rows.values()} == {"regressed"}, rows


@pytest.mark.parametrize("args, message", [
    (["HEAD"], "two git refs"),
    (["HEAD~1", "HEAD", "--base-python", sys.executable, "--new-python", sys.executable], "not both"),
    (["--base-python", sys.executable], "go together"),
    (["--base-python", "no-such-python-here", "--new-python", sys.executable], "no Python interpreter"),
    (["no-such-ref", "HEAD"], "cannot check out 'no-such-ref'"),
    (["HEAD", "HEAD", "--models", "no_such_model"], "no_such_model"),
    (["HEAD", "HEAD", "--rounds", "1"], "--rounds must be at least 2"),
    (["HEAD", "HEAD", "--max-time", "0"], "--max-time must be positive"),
    (["HEAD", "HEAD", "--threads", "-1"], "--threads must be 0"),
])
def test_bad_input_is_one_line_and_exit_two(history, tmp_path, capsys, args, message):
    assert main(["ab", *args, "--repo", str(history), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
