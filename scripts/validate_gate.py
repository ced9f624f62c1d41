"""Does the A/B gate decide on this machine? Issue 35's acceptance test, as a user would run it.

    python scripts/validate_gate.py [--sessions 10] [--neighbours 2] [--no-bisect] [--out DIR]
                                    [--suite PATH] [--record ROUNDS]

It builds a scratch history of 16 commits on top of this checkout's HEAD (a clone in --out): 15
commits that only append a line to HISTORY.txt, the 11th of which also makes every train step of the
timed models spin on the host for a quarter of the step's own time (+25%, on any machine). Then, beside
`--neighbours` busy processes that come and go (scripts/noisy_neighbour.py; 0 for a quiet
machine), it runs with `torchsuite ab`'s defaults, alternating,

- `--sessions` planted sessions, `ab HEAD~15 HEAD --models speech_cnn` (want: train regressed in
  at least 9 of 10, eval never),
- `--sessions` same-code sessions, `ab HEAD~15 HEAD~14` (want: 0 regressed),

each timed (want: within 5 minutes), and then `bisect --good HEAD~15 --bad HEAD --figure
speech_cnn/train/cpu` (want: the 11th commit named). `--suite` is the torchsuite checkout whose
`ab` and `bisect` are measured (default this one; an older worktree measures "before"). It prints
a table per session and a summary; every session's results and compare.json stay under --out.
`--record ROUNDS` runs every session for exactly ROUNDS rounds instead (`ab --rounds ROUNDS
--max-time 1`), so that a change to the judgement can be tried on the same rounds, each look of
a session judged on its first rounds' processes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANTED_AT = 11  # the commit (counted from the good end, HEAD~15) that adds the host work
PLANTED_SHARE = 0.25  # the host work the plant adds: this share of the train step's own time
# The plant wraps the train step: it notes when the step starts and, once the optimizer has
# stepped, spins for PLANTED_SHARE of the time the step took. A share, not a fixed time: a fixed
# 0.8 ms was 25% of speech_cnn's train step on one VM and 4-5% on another at one thread.
_STARTS = "        optimizer.zero_grad(set_to_none=True)\n"
_ENDS = "        optimizer.step()\n"


def plant(steps: str) -> str:
    """suite/timing/steps.py's text with the host work planted in its train step; ValueError
    when the step no longer has the lines the plant goes around."""
    for anchor in (_STARTS, _ENDS):
        if steps.count(anchor) != 1:
            raise ValueError(f"the train step has no single {anchor.strip()!r}")
    return (steps.replace(_STARTS, "        import time  # planted: host work, a share of the train step's time\n\n"
                                   "        started = time.perf_counter()\n" + _STARTS)
            .replace(_ENDS, _ENDS + f"        end = time.perf_counter() + {PLANTED_SHARE} * (time.perf_counter() - started)\n"
                                    "        while time.perf_counter() < end:\n"
                                    "            pass\n"))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def scratch_history(where: Path) -> tuple[Path, str]:
    """A clone of this checkout's HEAD with 15 more commits, the PLANTED_AT-th planting the
    slowdown; (the clone, the planted commit's hash)."""
    repo = where / "history"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    git(repo, "config", "user.email", "gate@torchsuite.invalid")
    git(repo, "config", "user.name", "validate_gate")
    planted = None
    for index in range(1, 16):
        with open(repo / "HISTORY.txt", "a") as f:
            f.write(f"commit {index}\n")
        if index == PLANTED_AT:
            steps = repo / "suite" / "timing" / "steps.py"
            try:
                steps.write_text(plant(steps.read_text()))
            except ValueError as err:
                sys.exit(f"validate_gate: cannot plant the slowdown in {steps}: {err}")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"commit {index}" + (" (planted: +25% host work in every train step)" if index == PLANTED_AT else ""))
        if index == PLANTED_AT:
            planted = git(repo, "rev-parse", "HEAD")
    return repo, planted


def torchsuite(suite: Path, args: list[str], out: Path) -> tuple[int, float, dict | None, str]:
    """(exit status, seconds, the --json output or None, the last line of stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "suite", *args, "--json", "--out", str(out)], cwd=suite,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    (out / "stderr.txt").write_text(proc.stderr)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    return proc.returncode, seconds, report, last


def session(suite: Path, repo: Path, new: str, out: Path, ab_args: list[str]) -> dict:
    status, seconds, report, last = torchsuite(
        suite, ["ab", "HEAD~15", new, "--repo", str(repo), "--models", "speech_cnn", *ab_args], out)
    verdicts = {}
    for row in (report or {}).get("rows", []):
        mode = "train" if " train " in row["figure"] else "eval"
        verdicts[mode] = (row["verdict"], row["ratio"], row.get("why", ""))
    rounds = (report or {}).get("header", {}).get("rounds")
    return {"status": status, "seconds": seconds, "verdicts": verdicts, "rounds": rounds, "error": "" if report else last}


def show(kind: str, index: int, result: dict) -> None:
    cells = " ".join(f"{mode} {v[0]} {v[1]:.3f}" if isinstance(v[1], float) else f"{mode} {v[0]}"
                     for mode, v in sorted(result["verdicts"].items(), reverse=True))
    print(f"| {kind} | {index} | {result['status']} | {result['rounds']} | {result['seconds']:.0f} | "
          f"{cells or result['error']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--neighbours", type=int, default=2, help="busy processes beside the sessions (0: none)")
    parser.add_argument("--no-bisect", action="store_true")
    parser.add_argument("--suite", default=str(ROOT), help="the torchsuite checkout whose ab and bisect run")
    parser.add_argument("--out", default=None)
    parser.add_argument("--record", type=int, default=0, metavar="ROUNDS",
                        help="record sessions of exactly ROUNDS rounds each, for --replay (ab --rounds ROUNDS --max-time 1)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="torchsuite-gate-"))
    out.mkdir(parents=True, exist_ok=True)
    suite = Path(args.suite).resolve()
    repo, planted = scratch_history(out)
    print(f"scratch history {repo}; planted commit {planted[:10]} (HEAD~{15 - PLANTED_AT}); measuring {suite}")
    neighbour = (subprocess.Popen([sys.executable, str(ROOT / "scripts" / "noisy_neighbour.py"), str(args.neighbours)])
                 if args.neighbours else None)
    results = {"planted": [], "same": []}
    ab_args = ["--rounds", str(args.record), "--max-time", "1"] if args.record else []
    try:
        print("\n| session | # | exit | rounds | s | verdicts (ratio new/base) |\n|---|---|---|---|---|---|")
        for index in range(args.sessions):
            for kind, new in (("planted", "HEAD"), ("same", "HEAD~14")):
                results[kind].append(session(suite, repo, new, out / f"{kind}-{index}", ab_args))
                show(kind, index, results[kind][-1])
        bisected = None
        if not args.no_bisect:
            status, seconds, report, last = torchsuite(
                suite, ["bisect", "--repo", str(repo), "--good", "HEAD~15", "--bad", "HEAD",
                        "--figure", "speech_cnn/train/cpu"], out / "bisect")
            result = (report or {}).get("result", {})
            named = (result.get("first_bad") or {}).get("commit") or (result.get("first_bad") or {}).get("name")
            bisected = (status, seconds, result.get("status"), named, result.get("reason", last))
    finally:
        if neighbour:
            neighbour.kill()
    print(f"\nbeside {args.neighbours} busy neighbours, {args.sessions} sessions of each, ab at its defaults:")
    if args.sessions:
        caught = sum(r["verdicts"].get("train", ("",))[0] == "regressed" for r in results["planted"])
        eval_hit = sum(r["verdicts"].get("eval", ("",))[0] == "regressed" for r in results["planted"])
        false = sum(any(v[0] == "regressed" for v in r["verdicts"].values()) for r in results["same"])
        longest = max(r["seconds"] for rs in results.values() for r in rs)
        print(f"  planted: train regressed in {caught} of {args.sessions} (want >= 9), eval in {eval_hit}")
        print(f"  same code: a regression in {false} of {args.sessions} (want 0)")
        print(f"  longest session: {longest:.0f} s (want <= 300)")
    if bisected:
        status, seconds, outcome, named, reason = bisected
        right = bool(named) and planted.startswith(str(named)[:7])
        print(f"  bisect: exit {status}, {outcome}, named {named} ({'the planted commit' if right else 'NOT the planted commit'}), "
              f"{seconds:.0f} s; {reason}")
    print(f"  results under {out}")


if __name__ == "__main__":
    main()
