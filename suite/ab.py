"""`torchsuite ab BASE NEW`: is my change slower? Two builds timed interleaved on one machine.

BASE and NEW are git refs of the code under test (this repository by default, `--repo` for
another checkout of it): each is checked out into a temporary worktree and its own `suite`
package times the figures, so a change to a model, a step or the timing core is what is
measured. Or they are two Python environments (`--base-python`, `--new-python`: two torch
builds side by side) timing this checkout's code. Rounds alternate fresh processes A B B A A B
..., each timing every figure (suite.timing.processes), so that the machine's slow minutes fall
on both sides alike; a round's two processes import torch side by side, then time one at a time.
Each side's figures are merged across its processes and written as a results file; the verdicts
are `torchsuite compare`'s (suite.report.compare) on those two files.
`torchsuite bisect` (suite.bisect) runs its sessions with the same pieces: Checkouts (worktrees
made as needed), time_interleaved (rounds that can go on where an earlier session stopped) and
write_sides.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from suite.errors import SuiteError
from suite.timing.processes import Interpreter, WorkerError, WorkerProcess, code_root, merge_figures, round_order
from suite.timing.worker import PEAKS_ENV

DEFAULT_ROUNDS = 4  # the rounds a session starts with; it adds two at a time while a figure is open
DEFAULT_MAX_TIME_S = 240.0  # the time a session may take to decide (--max-time)
OPEN = ("undecided", "untrusted")  # compare's verdicts that more rounds may settle


class Checkouts:
    """Worktrees of one git repository's commits, each made when first asked for, all removed on
    close (`with Checkouts(repo) as checkouts:`), whatever happened meanwhile."""

    def __init__(self, repo: str | None = None):
        self.repo = Path(repo or code_root()).resolve()
        if not (self.repo / ".git").exists():
            raise SuiteError(f"{self.repo} is not a git checkout (--repo)")
        self.scratch: Path | None = None
        self.trees: dict[str, Path] = {}

    def commit(self, ref: str) -> str:
        """The full commit hash `ref` names; SuiteError when it names none."""
        done = subprocess.run(["git", "-C", str(self.repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                              capture_output=True, text=True)
        if done.returncode != 0 or not done.stdout.strip():
            raise SuiteError(f"unknown git ref {ref!r} in {self.repo}")
        return done.stdout.strip()

    def tree(self, ref: str, name: str | None = None) -> Path:
        """A detached worktree of `ref` (one per commit, made once)."""
        commit = _git(self.repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") or ref
        if commit not in self.trees:
            if self.scratch is None:
                self.scratch = Path(tempfile.mkdtemp(prefix="torchsuite-ab-"))
            tree = self.scratch / (name or commit[:12])
            done = subprocess.run(["git", "-C", str(self.repo), "worktree", "add", "--detach", str(tree), commit],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["git worktree failed"])[-1]
                raise SuiteError(f"cannot check out {ref!r} of {self.repo}: {last}")
            self.trees[commit] = tree
        return self.trees[commit]

    def close(self) -> None:
        for tree in self.trees.values():
            subprocess.run(["git", "-C", str(self.repo), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
        self.trees.clear()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self) -> "Checkouts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def builds_from_refs(base: str, new: str, repo: str | None = None):
    """(base, new) Interpreters running this Python on worktrees of two git refs; removed after."""
    with Checkouts(repo) as checkouts:
        trees = []
        for side, ref in (("base", base), ("new", new)):
            trees.append(checkouts.tree(ref, side))
            if not (trees[-1] / "suite" / "timing" / "worker.py").exists():
                raise SuiteError(f"{ref!r} has no suite/timing/worker.py: it predates torchsuite ab")
        commits = [_git(checkouts.repo, "rev-parse", ref) for ref in (base, new)]
        yield tuple(Interpreter(cwd=str(tree), label=f"{ref} ({commit[:10]})")
                    for tree, ref, commit in zip(trees, (base, new), commits))


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


def run_ab(base: Interpreter, new: Interpreter, requests: list[dict], out_dir, *, rounds: int = DEFAULT_ROUNDS,
           max_time_s: float = DEFAULT_MAX_TIME_S, threshold: float = 0.05,
           say=lambda line: None) -> tuple[dict, list]:
    """Time both builds in alternating fresh processes until compare decides every figure or the
    time is up; compare's (header, rows) on the two results files written under out_dir."""
    from suite.report import compare

    sides = {"base": base, "new": new}

    def judged(collected: dict) -> tuple[bool, tuple]:
        with tempfile.TemporaryDirectory(prefix="torchsuite-ab-") as scratch:
            header, rows = compare.compare(*write_sides(collected, sides, scratch), threshold=threshold)
        return not [r for r in rows if r.verdict in OPEN], (header, rows)

    collected, _ = time_until_decided(base, new, requests, rounds, max_time_s, judged, say)
    header, rows = compare.compare(*write_sides(collected, sides, out_dir), threshold=threshold)
    header["seconds"], header["rounds"] = collected["seconds"], collected["rounds"]
    return header, rows


def what_would_decide(header: dict, rows: list) -> list[str]:
    """A line for each figure still open after a session, saying what would settle it."""
    per_round = header["seconds"] / max(1, header["rounds"])
    lines = []
    for row in rows:
        if row.verdict not in OPEN:
            continue
        if row.processes_to_decide:
            rounds = max(row.processes_to_decide, header["rounds"] + 2)
            advice = (f"about {row.processes_to_decide} rounds would decide it at the spread seen: "
                      f"--max-time {math.ceil(rounds * per_round / 10) * 10:.0f} (about {per_round:.0f} s a round)")
        elif row.verdict == "untrusted":
            advice = "more rounds on a quieter machine (fewer disturbances of one side only)"
        else:
            advice = "its change is the threshold itself: a smaller or larger --threshold decides it"
        lines.append(f"{row.figure}: {row.verdict} after {header['rounds']} rounds ({row.why}); {advice}")
    return lines


def check_session(rounds: int, max_time_s: float) -> None:
    """SuiteError for a session's options that cannot work (before any checkout is made)."""
    if rounds < 2:
        raise SuiteError(f"--rounds must be at least 2 (a figure's spread needs two processes), got {rounds}")
    if not max_time_s > 0:
        raise SuiteError(f"--max-time must be positive, got {max_time_s}")


def time_until_decided(base: Interpreter, new: Interpreter, requests: list[dict], rounds: int, max_time_s: float,
                       judged, say=lambda line: None) -> tuple[dict, object]:
    """`rounds` interleaved rounds, then two more at a time (an A B and a B A) while
    `judged(collected)` -> (settled, judgement) says something is still open and another two rounds
    fit in `max_time_s` at the pace so far. (collected, the last judgement); collected["seconds"]
    is the time its rounds took in all, collected["looks"] how many times it was judged (each look
    needs a smaller p: suite.report.compare.session_significance)."""
    check_session(rounds, max_time_s)
    started = time.monotonic()
    collected = time_interleaved(base, new, requests, rounds, say)
    while True:
        collected["seconds"] = time.monotonic() - started
        collected["looks"] = collected.get("looks", 0) + 1  # compare's significance shrinks with each look
        settled, judgement = judged(collected)
        elapsed = time.monotonic() - started
        if settled or elapsed + 2 * elapsed / collected["rounds"] > max_time_s:
            return collected, judgement
        say(f"not decided after {collected['rounds']} rounds ({elapsed:.0f} s of {max_time_s:.0f}): two more")
        collected = time_interleaved(base, new, requests, 2, say, collected)


def time_interleaved(base: Interpreter, new: Interpreter, requests: list[dict], rounds: int,
                     say=lambda line: None, collected: dict | None = None) -> dict:
    """{"base"|"new": {figure: [one record per process]}, "rounds": n} after `rounds` rounds of one
    fresh process per build, A B then B A. With `collected` (an earlier call's, same builds), the
    rounds go on where those stopped and their processes are added to it."""
    if rounds < 2:
        raise SuiteError(f"--rounds must be at least 2 (a figure's spread needs two processes), got {rounds}")
    sides = {"base": base, "new": new}
    collected = collected or {"rounds": 0, "session": uuid.uuid4().hex,
                              **{side: {r["figure"]: [] for r in requests} for side in sides}}
    done = collected["rounds"]
    for round_index in range(done, done + rounds):
        order = ("base", "new") if round_index % 2 == 0 else ("new", "base")
        # Both builds' workers import torch side by side, then time one after the other: a round
        # costs one interpreter start, not two, and nothing runs beside a figure.
        workers = {side: WorkerProcess(round_order(requests, round_index), sides[side], held=True,
                                       env=seeded_peaks(collected[side].values()))
                   for side in order}
        try:
            for worker in workers.values():
                worker.ready()
            for side in order:
                worker = workers[side]
                worker.release()
                for index, request in enumerate(worker.requests):
                    try:
                        record = {**worker.result(index), "round": round_index}  # pairs it with the other side's
                        collected[side][request["figure"]].append(record)
                    except WorkerError as err:
                        say(f"{side} round {round_index + 1}: {request['figure']}: {err}")
                worker.close()
        finally:
            for worker in workers.values():
                worker.close()
        collected["rounds"] = round_index + 1
        say(f"round {round_index + 1} of {done + rounds} done ({' then '.join(order)})")
    return collected


def seeded_peaks(records_per_figure) -> dict:
    """The environment that lets a side's later workers take the peak calibrations its earlier
    ones measured (suite.timing.worker.PEAKS_ENV) instead of measuring them again: a quick
    calibration was a quarter of an ab process's time. Empty before the side's first record, and
    for records without one (a user's function) or of both samplings, quick and full."""
    peaks, quick = {}, set()
    for records in records_per_figure:
        for record in records:
            calibration = record.get("peak_calibration")
            if isinstance(calibration, dict):
                peaks.setdefault((calibration.get("device"), calibration.get("dtype"), calibration.get("threads")),
                                 calibration)
                quick.add(bool(record.get("quick")))
    if not peaks or len(quick) != 1:
        return {}
    return {PEAKS_ENV: json.dumps({"quick": quick.pop(), "peaks": list(peaks.values())})}


def write_sides(collected: dict, sides: dict[str, Interpreter], out_dir) -> tuple[Path, Path]:
    """Each side's figures merged across its processes, as a results file under out_dir/<side>/
    (replacing the one an earlier call wrote there for the same session)."""
    written = collected.setdefault("files", {})
    from suite.environment import capture
    from suite.results import ResultsStore

    paths = []
    for side, interpreter in sides.items():
        merged = merge_figures(collected[side])
        if not merged:
            raise SuiteError(f"{side} ({interpreter.label}) timed no figure; see the lines above")
        if "machine" not in collected:  # once a session: a session judged as it goes writes its sides often
            collected["machine"] = capture("ab")
        first = next(iter(merged.values()))
        machine = {**collected["machine"], "name": f"ab-{side}", "torch": first.get("torch"),
                   "suite_commit": interpreter.label}
        store = ResultsStore(Path(out_dir) / side, machine, run={"ab": side, "build": interpreter.label,
                                                                  "python": interpreter.python,
                                                                  "rounds": collected["rounds"],
                                                                  "looks": collected.get("looks", 1),
                                                                  "session": collected.get("session")})
        for figure, record in merged.items():
            store.add({**record, "figure": figure})
        store.finish("complete")
        paths.append(store.path)
        earlier = Path(written.get(side, store.path))  # a session judged as it goes writes its sides again
        if earlier != store.path and earlier.parent == store.path.parent:
            earlier.unlink(missing_ok=True)
        written[side] = str(store.path)
    return paths[0], paths[1]
