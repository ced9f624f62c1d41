"""`torchsuite bisect`: planted regressions in scratch git histories are found, and nothing else.

The speed tests time a pure-Python loop (single-threaded, no sleep: the VM's speed moves it
alike on both sides of an interleaved A/B) whose iteration count a commit raises.
"""
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from suite.bisect import search
from suite.bisect.speed import UNDECIDED, decide
from suite.cli import main

BENCH = '''# {note}
N = {n}


def work():
    total = 0
    for i in range(N):
        total += i * i % 7
    return total
'''
MATHS = '''# {note}
def add(a, b):
    return a {op} b
'''
CHECKS = '''from pkg.maths import add


def check_add():
    assert add(2, 3) == 5, f"add(2, 3) = {add(2, 3)}"
'''


def history(root, versions: list[dict[str, str]]):
    """A git repository at `root` with one commit per dict of {path: text} (files absent from a
    dict are removed in that commit); commits are named "commit 1", "commit 2", ..."""
    root.mkdir()
    git(root, "init", "-q")
    for number, files in enumerate(versions, start=1):
        for old in root.glob("pkg/*.py"):
            old.unlink()
        for path, text in {"pkg/__init__.py": "", **files}.items():
            (root / path).parent.mkdir(exist_ok=True)
            (root / path).write_text(text)
        git(root, "add", "-A")
        git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"commit {number}")
    return root


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def bisect(capsys, repo, *args) -> tuple[int, dict]:
    status = main(["bisect", "--repo", str(repo), "--json", *args])
    out = capsys.readouterr().out
    return status, json.loads(out)


def first_bad_subject(report: dict) -> str | None:
    found = report["result"]["first_bad"]
    return found["label"].split(" ", 1)[1] if found else None


def no_worktrees_left(repo) -> bool:
    return git(repo, "worktree", "list").count("\n") == 1


# -- the search, with a judge that answers at once ------------------------------------------------

@pytest.mark.parametrize("culprit", range(1, 16))
def test_search_finds_any_first_bad_of_sixteen_in_four_midpoints(culprit):
    asked = []

    def judge(index):
        asked.append(index)
        return search.BAD if index >= culprit else search.GOOD

    outcome = search.bisect(16, judge)
    assert outcome.first_bad == culprit and outcome.found and len(asked) <= 4, asked


def test_search_skips_what_it_cannot_judge_and_then_names_a_range():
    verdicts = {1: search.GOOD, 2: search.GOOD, 3: search.SKIP, 4: search.SKIP, 5: search.BAD, 6: search.BAD}
    outcome = search.bisect(8, verdicts.__getitem__)
    assert not outcome.found and outcome.candidates == (3, 4, 5) and outcome.skipped == (3, 4)
    # a skipped item outside the last good and first bad leaves one culprit
    verdicts[4] = search.GOOD
    assert search.bisect(8, verdicts.__getitem__).first_bad == 5


def row(verdict, ratio, high, why=""):
    return SimpleNamespace(verdict=verdict, ratio=ratio, ratio_ci_high=high, p_slower=0.2, why=why)


@pytest.mark.parametrize("compared, expected", [
    (row("regressed", 1.20, 1.25, "+20.0%, p = 0.001"), search.BAD),
    (row("untrusted", 1.00, 1.04, "flagged: contended"), UNDECIDED),
    (row("unchanged", 1.08, 1.30), UNDECIDED),  # slower beyond the threshold, not significantly: noise
    (row("unchanged", 1.02, 1.21), UNDECIDED),  # its interval still reaches the bad end's 1.20
    (row("unchanged", 1.02, 1.09), search.GOOD),
    (row("improved", 0.90, 0.95), search.GOOD),
])
def test_a_midpoint_is_good_only_on_evidence_that_the_regression_is_absent(compared, expected):
    assert decide(compared, threshold=0.05, bad_ratio=1.20)[0] == expected


# -- correctness: a check in a scratch history ----------------------------------------------------

def check_history(root, bad_from: int, commits: int = 16, absent: tuple[int, ...] = ()):
    return history(root, [{"pkg/maths.py": MATHS.format(note=f"commit {i}", op="-" if i >= bad_from else "+"),
                           **({} if i in absent else {"pkg/checks.py": CHECKS})}
                          for i in range(1, commits + 1)])


def test_check_finds_the_commit_that_broke_it(tmp_path, capsys):
    repo = check_history(tmp_path / "repo", bad_from=6)
    status, report = bisect(capsys, repo, "--good", "HEAD~15", "--bad", "HEAD", "--check", "pkg.checks:check_add",
                            "--out", str(tmp_path / "out"))
    assert status == 0 and first_bad_subject(report) == "commit 6", report["result"]
    assert report["midpoints"] <= 4 and report["builds"] == report["midpoints"] + 2
    step = report["steps"][0]["measurements"][0]  # commit 8: fails, and says how
    assert step["outcome"] == "fail" and "add(2, 3) = -1" in step["detail"]
    assert (tmp_path / "out" / "bisect.json").exists() and no_worktrees_left(repo)


def test_check_without_a_regression_names_no_culprit(tmp_path, capsys):
    repo = check_history(tmp_path / "repo", bad_from=99, commits=8)
    status, report = bisect(capsys, repo, "--good", "HEAD~7", "--bad", "HEAD", "--check", "pkg.checks:check_add",
                            "--out", str(tmp_path / "out"))
    assert status == 1 and report["result"]["status"] == "no_regression" and report["result"]["first_bad"] is None
    assert report["steps"] == [] and "does not fail at the bad end" in report["result"]["reason"]


def test_commits_where_the_check_is_absent_are_skipped_and_leave_a_range(tmp_path, capsys):
    repo = check_history(tmp_path / "repo", bad_from=5, commits=8, absent=(4, 5))
    status = main(["bisect", "--repo", str(repo), "--good", "HEAD~7", "--bad", "HEAD",
                   "--check", "pkg.checks:check_add", "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert status == 1 and "no single culprit" in text, text
    assert "commit 4, " in text and "commit 5, " in text and "commit 6 (" in text
    assert "skipped (could not be judged)" in text


def test_python_environments_are_bisected_in_the_order_given(tmp_path, capsys):
    # Environments that differ by a sitecustomize: from the third on, `add` is broken.
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "__init__.py").write_text("")
    (code / "pkg" / "maths.py").write_text(MATHS.format(note="", op="+"))
    (code / "pkg" / "checks.py").write_text(CHECKS)
    broken = tmp_path / "broken-site"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import pkg.maths\npkg.maths.add = lambda a, b: a - b\n")
    pythons = []
    for number in range(1, 5):
        wrapper = tmp_path / f"python{number}"
        path = f'PYTHONPATH="{broken}:$PYTHONPATH" ' if number >= 3 else ""
        wrapper.write_text(f'#!/bin/sh\n{path}exec {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        pythons.append(str(wrapper))
    status, report = bisect(capsys, code, "--pythons", *pythons, "--check", "pkg.checks:check_add",
                            "--out", str(tmp_path / "out"))
    assert status == 0 and report["result"]["first_bad"]["label"] == pythons[2], report["result"]
    assert report["items_kind"] == "environment" and report["builds"] == len({0, 3, *(s["index"] for s in report["steps"])})


# -- a user's function, timed by the core ---------------------------------------------------------

def test_a_function_is_timed_by_the_core_and_merges_like_any_figure(tmp_path, monkeypatch):
    from suite.errors import SuiteError
    from suite.timing.function import time_function
    from suite.timing.processes import merge_figures

    (tmp_path / "userbench.py").write_text(BENCH.format(note="", n=2000) + "\n\ndef broken():\n    1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    records = [time_function("userbench:work", threads=1, quick=True) for _ in range(2)]
    first = records[0]
    assert (first["model"], first["mode"], first["setup"], first["batch_size"]) == ("userbench:work", "call", "cpu", 1)
    assert first["median_s"] > 0 and len(first["samples"]) >= 5 and first["flops"] is None
    merged = merge_figures({"userbench:work": records})["userbench:work"]
    assert merged["interval_method"] == "between_processes" and merged["achieved_flops_per_s"] is None
    for target, message in (("userbench:nothing", "has no attribute"), ("no_such_module_x:f", "no module"),
                            ("userbench:broken", "ZeroDivisionError"), ("userbench", "not module:function")):
        with pytest.raises(SuiteError, match=message):
            time_function(target, quick=True)


# -- speed: a benchmark function in a scratch history ---------------------------------------------

def bench_history(root, slow_from: int, commits: int, slowdown: float):
    return history(root, [{"pkg/bench.py": BENCH.format(note=f"commit {i}", n=int(20000 * (slowdown if i >= slow_from else 1)))}
                          for i in range(1, commits + 1)])


# Single-threaded: this VM's 2-thread figures swing between two speeds. A large effect against a
# large threshold (which is also how far the two sides' canaries may differ): the VM's jitter
# cannot make a 2x slowdown disappear, nor make a same-code comparison cross 1.3.
SMALL = ["--threads", "1", "--rounds", "2", "--threshold", "0.3"]


@pytest.fixture
def generated_sessions(monkeypatch):
    """A/B sessions whose processes are generated, not timed: each process's median is its build's
    work (N of its pkg/bench.py) on a machine whose speed moves 8% (log sd) from round to round, the
    same for both sides of a round (what interleaving is for), plus 1% of each process's own. The
    template is one real record of the core, so compare reads every field it would; its measurement
    (median, samples, canaries, flags: a busy machine flags it) is replaced by the generated one."""
    from suite.bisect import speed
    from suite.timing.function import time_function

    rng = random.Random(7)
    template = {}
    settings = {"process_sd": 0.01}  # a test may make its processes scatter more

    def work(interpreter) -> int:
        return int(re.search(r"^N = (\d+)$", (Path(interpreter.cwd) / "pkg" / "bench.py").read_text(), re.M)[1])

    def time_interleaved(base, new, requests, rounds, say=lambda line: None, collected=None):
        (figure,) = [r["figure"] for r in requests]
        if not template:
            sys.path.insert(0, base.cwd)
            try:
                template.update(time_function("pkg.bench:work", threads=1, quick=True))
            finally:
                sys.path.remove(base.cwd)
                sys.modules.pop("pkg.bench", None), sys.modules.pop("pkg", None)
        unit = template["median_s"] / work(base)
        collected = collected or {"rounds": 0, "session": f"generated-{rng.random()}", "base": {figure: []}, "new": {figure: []}}
        for _ in range(rounds):
            moment = math.exp(rng.gauss(0, 0.08))
            for side, interpreter in (("base", base), ("new", new)):
                median = unit * work(interpreter) * moment * math.exp(rng.gauss(0, settings["process_sd"]))
                collected[side][figure].append({
                    **template, "median_s": median, "iqr_s": median * 0.01, "flags": ["quick"],  # not the template's
                    "samples": [median * math.exp(rng.gauss(0, 0.01)) for _ in range(6)],
                    "canary_before_s": 0.004 * moment, "canary_after_s": 0.004 * moment, "round": collected["rounds"]})
            collected["rounds"] += 1
        return collected

    monkeypatch.setattr(speed.ab, "time_interleaved", time_interleaved)
    return settings


def test_speed_judgement_on_generated_processes_finds_the_planted_commit(tmp_path, capsys, generated_sessions):
    # bisect's whole speed path (ends, midpoints, compare's verdicts) on processes generated from a
    # known machine: deterministic, and seconds instead of a minute of real timing (that is the
    # slow test below).
    repo = bench_history(tmp_path / "repo", slow_from=6, commits=8, slowdown=1.3)
    status, report = bisect(capsys, repo, "--good", "HEAD~7", "--bad", "HEAD", "--figure", "pkg.bench:work",
                            "--threads", "1", "--rounds", "4", "--out", str(tmp_path / "out"))
    assert status == 0 and first_bad_subject(report) == "commit 6", json.dumps([report["ends"], report["steps"]], indent=1)
    ends = report["ends"]["measurements"][-1]
    assert ends["compare_verdict"] == "regressed" and 1.2 < ends["ratio"] < 1.4
    assert {s["measurements"][-1]["verdict"] for s in report["steps"]} == {"good", "bad"}
    assert no_worktrees_left(repo)


def test_speed_without_a_regression_on_generated_processes_names_no_culprit(tmp_path, capsys, generated_sessions):
    repo = bench_history(tmp_path / "repo", slow_from=99, commits=4, slowdown=1.0)
    status, report = bisect(capsys, repo, "--good", "HEAD~3", "--bad", "HEAD", "--figure", "pkg.bench:work",
                            "--threads", "1", "--rounds", "4", "--out", str(tmp_path / "out"))
    assert status == 1 and report["result"]["status"] == "no_regression" and report["steps"] == []


def test_ends_that_cannot_be_decided_in_time_are_a_give_up_not_no_regression(tmp_path, capsys, generated_sessions):
    # processes that scatter by 10%: four rounds cannot show a 20% slowdown, and the time allows no more
    generated_sessions["process_sd"] = 0.1
    repo = bench_history(tmp_path / "repo", slow_from=3, commits=4, slowdown=1.2)
    status, report = bisect(capsys, repo, "--good", "HEAD~3", "--bad", "HEAD", "--figure", "pkg.bench:work",
                            "--max-time", "0.01", "--out", str(tmp_path / "out"))
    assert status == 1 and report["result"]["status"] == "undecided" and report["steps"] == [], report["ends"]
    assert "could not be decided in --max-time 0.01 s" in report["result"]["reason"] and report["processes"] == 8
    assert report["ends"]["measurements"][-1]["compare_verdict"] == "undecided"


@pytest.mark.slow  # real timing in fresh processes: 23 s, and at the mercy of the VM's noise
def test_speed_finds_a_planted_slowdown_in_a_short_history(tmp_path, capsys):
    repo = bench_history(tmp_path / "repo", slow_from=3, commits=3, slowdown=2.0)
    status, report = bisect(capsys, repo, "--good", "HEAD~2", "--bad", "HEAD", "--figure", "pkg.bench:work",
                            *SMALL, "--out", str(tmp_path / "out"))
    assert status == 0 and first_bad_subject(report) == "commit 3", json.dumps(report["steps"], indent=1)
    ends = report["ends"]["measurements"][-1]
    assert ends["compare_verdict"] == "regressed" and 1.6 < ends["ratio"] < 2.6
    good_step = report["steps"][0]["measurements"][-1]  # commit 2: like the good end
    assert good_step["verdict"] == "good" and good_step["ratio_ci_high"] < ends["ratio"]
    assert (tmp_path / "out" / "step1" / "compare.json").exists() and no_worktrees_left(repo)


@pytest.mark.slow
def test_speed_without_a_regression_names_no_culprit(tmp_path, capsys):
    repo = bench_history(tmp_path / "repo", slow_from=99, commits=16, slowdown=1.0)
    status, report = bisect(capsys, repo, "--good", "HEAD~15", "--bad", "HEAD", "--figure", "pkg.bench:work",
                            "--threads", "1", "--rounds", "4", "--out", str(tmp_path / "out"))
    assert status == 1 and report["result"]["status"] == "no_regression" and report["result"]["first_bad"] is None
    assert report["steps"] == []


@pytest.mark.slow
def test_speed_finds_a_twenty_percent_slowdown_among_sixteen_commits(tmp_path, capsys):
    repo = bench_history(tmp_path / "repo", slow_from=11, commits=16, slowdown=1.2)
    status, report = bisect(capsys, repo, "--good", "HEAD~15", "--bad", "HEAD", "--figure", "pkg.bench:work",
                            "--threads", "1", "--rounds", "4", "--out", str(tmp_path / "out"))
    assert status == 0 and first_bad_subject(report) == "commit 11", json.dumps(report["steps"], indent=1)
    assert report["midpoints"] <= 5
    print(f"{report['midpoints']} midpoints, {report['sessions']} sessions, "
          f"{report['seconds_per_midpoint']:.0f} s a midpoint", file=sys.stderr)


# -- bad input: one line, exit 2 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_repo(tmp_path_factory):
    return check_history(tmp_path_factory.mktemp("bad-input") / "repo", bad_from=3, commits=4)


@pytest.mark.parametrize("args, message", [
    (["--good", "no-such-ref", "--bad", "HEAD", "--check", "pkg.checks:check_add"], "unknown git ref 'no-such-ref'"),
    (["--good", "HEAD", "--bad", "HEAD~2", "--check", "pkg.checks:check_add"], "is not an ancestor"),
    (["--good", "HEAD", "--bad", "HEAD", "--check", "pkg.checks:check_add"], "the same commit"),
    (["--good", "HEAD~3", "--bad", "HEAD"], "give one of --figure"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--figure", "pkg.bench:work", "--check", "pkg.checks:check_add"],
     "give one of --figure"),
    (["--good", "HEAD~3", "--check", "pkg.checks:check_add"], "give --good and --bad"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--figure", "mnist_cnn/train/cpu/more"], "neither module:function nor MODEL"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--figure", "no_such_model/train"], "no_such_model"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--figure", "mnist_cnn/fly"], "unknown mode 'fly'"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--check", "checks"], "neither module:function nor SUITE/CASE"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--check", "pkg.checks:no_such_check"], "at the good end"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--figure", "pkg.bench:work", "--rounds", "1"], "--rounds must be at least 2"),
    (["--good", "HEAD~3", "--bad", "HEAD", "--figure", "pkg.bench:work", "--threshold", "0"], "--threshold must be positive"),
    (["--pythons", sys.executable, "--check", "pkg.checks:check_add"], "at least two environments"),
    (["--pythons", sys.executable, "no-such-python-here", "--check", "pkg.checks:check_add"], "no Python interpreter"),
    (["--good", "HEAD~3", "--pythons", sys.executable, sys.executable, "--check", "x:y"], "not both"),
])
def test_bad_input_is_one_line_and_exit_two(small_repo, tmp_path, capsys, args, message):
    assert main(["bisect", "--repo", str(small_repo), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert no_worktrees_left(small_repo)
