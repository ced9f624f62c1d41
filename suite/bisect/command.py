"""`torchsuite bisect`: the ends first, then the steps, then one report (text or JSON) and its exit status.

Exit status: 0 when one first bad item was found; 1 when there is no single culprit (the ends
show no regression, or could not be decided in the time allowed, or items that could not be
judged leave a range); 2 on bad input (an
unknown ref, a bad selector, a check absent at an end), one line on stderr.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from suite import ab
from suite.bisect import search
from suite.bisect.builds import CommitBuilds, PythonBuilds
from suite.bisect.check import CheckJudge
from suite.bisect.speed import UNDECIDED, SpeedJudge
from suite.errors import SuiteError
from suite.results import json_ready, write_json_atomically
from suite.target import parse_target

FOUND, RANGE, NO_REGRESSION, GAVE_UP = "found", "range", "no_regression", "undecided"
MODES = ("train", "eval")


def figure_requests(selector: str, device: str, threads: int | None) -> list[dict]:
    """The one figure `--figure` names: a user's `module:function`, or MODEL[/MODE[/SETUP]] of the
    quick plan (mode train, setup the device's by default)."""
    if threads is not None and threads < 1:
        raise SuiteError(f"--threads must be at least 1, got {threads}")
    if ":" in selector:
        _parse(selector, "--figure")
        kwargs = {"device": device, "threads": threads, "quick": True}  # ab's quick sampling in each process
        return [{"figure": selector, "function": selector, "kwargs": kwargs}]
    from suite.timing.setups import SETUP_DEVICE

    parts = selector.split("/")
    if len(parts) > 3 or not all(parts):
        raise SuiteError(f"--figure {selector!r} is neither module:function nor MODEL[/MODE[/SETUP]]")
    model, mode, setup = (parts + ["train", device][len(parts) - 1:])[:3]
    if mode not in MODES:
        raise SuiteError(f"unknown mode {mode!r} in --figure {selector}; valid: {', '.join(MODES)}")
    if setup not in SETUP_DEVICE:
        raise SuiteError(f"unknown setup {setup!r} in --figure {selector}; valid: {', '.join(SETUP_DEVICE)}")
    requests = [r for r in ab.figure_requests([model], SETUP_DEVICE[setup], [setup], threads) if r["mode"] == mode]
    if len(requests) != 1:
        raise SuiteError(f"--figure {selector} names {len(requests)} figures of the quick plan, not one")
    return requests


def check_selector(selector: str) -> str:
    if ":" in selector:
        return _parse(selector, "--check")
    parts = selector.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise SuiteError(f"--check {selector!r} is neither module:function nor SUITE/CASE[/CHECK] "
                         f"(a registered check, as `torchsuite run` records it)")
    return selector


def _parse(selector: str, option: str) -> str:
    try:
        parse_target(selector)
    except ValueError as err:
        raise SuiteError(f"{option} {err}") from None
    return selector


@contextlib.contextmanager
def make_builds(good: str | None, bad: str | None, pythons: list[str] | None, repo: str | None):
    if pythons:
        if good or bad:
            raise SuiteError("give --good and --bad (commits) or --pythons (environments, good first), not both")
        yield PythonBuilds(pythons, repo)
        return
    if not (good and bad):
        raise SuiteError("give --good and --bad (git refs), or --pythons with the good environment first")
    with ab.Checkouts(repo) as checkouts:
        yield CommitBuilds(checkouts, good, bad)


def bisect(*, good=None, bad=None, figure=None, check=None, pythons=None, repo=None, device="cpu",
           threads=None, rounds=ab.DEFAULT_ROUNDS, max_time_s=ab.DEFAULT_MAX_TIME_S, threshold=0.05,
           out="results/bisect",
           say=lambda line: None) -> dict:
    """The bisect's report (see format_text); raises SuiteError on bad input."""
    if (figure is None) == (check is None):
        raise SuiteError("give one of --figure (a speed regression) or --check (a correctness regression)")
    requests = figure_requests(figure, device, threads) if figure else None
    selector = check_selector(check) if check else None
    started = time.monotonic()
    with make_builds(good, bad, pythons, repo) as builds:
        if requests:
            judge = SpeedJudge(builds, requests, rounds, threshold, out, say, max_time_s)
        else:
            judge = CheckJudge(builds, selector, device, say)
        items = builds.items
        regressed, end_runs = judge.ends()  # first: bad input found there is the only line on stderr
        say(f"{len(items)} {builds.kind}s from {items[0].label} (good) to {items[-1].label} (bad); "
            f"ends: {_measurement(end_runs[-1].to_dict())}")
        steps = []

        def judge_step(index: int) -> str:
            say(f"step {len(steps) + 1}: {items[index].label} ({index + 1}/{len(items)})")
            step_started = time.monotonic()
            verdict, runs = judge.judge(index, len(steps) + 1)
            steps.append({"step": len(steps) + 1, "index": index, "item": items[index].to_dict(),
                          "verdict": verdict, "seconds": time.monotonic() - step_started,  # the checkout too
                          "measurements": [r.to_dict() for r in runs]})
            say(f"step {len(steps)}: {verdict} ({_measurement(runs[-1].to_dict())})")
            return verdict

        outcome = search.bisect(len(items), judge_step) if regressed else None
        used = len(builds.used)
    if outcome is None and requests and end_runs[-1].verdict == UNDECIDED:
        status, reason = GAVE_UP, (f"whether the bad end is slower than the good end could not be decided in "
                                   f"--max-time {max_time_s:g} s: {end_runs[-1].reason}")
    elif outcome is None:
        status, reason = NO_REGRESSION, _no_regression_reason(end_runs, requests is not None)
    elif outcome.found:
        status, reason = FOUND, ""
    else:
        status, reason = RANGE, (f"{len(outcome.skipped)} item(s) between the last good and the first bad one "
                                 "could not be judged")
    midpoint_s = [s["seconds"] for s in steps]
    return {
        "kind": "speed" if requests else "check",
        "figure": figure, "check": check, "threshold": threshold if requests else None,
        "rounds": rounds if requests else None, "source": builds.source, "items_kind": builds.kind,
        "items": [i.to_dict() for i in items],
        "ends": {"regressed": regressed, "measurements": [r.to_dict() for r in end_runs]},
        "steps": steps,
        "result": {"status": status, "reason": reason,
                   "first_bad": items[outcome.first_bad].to_dict() if outcome and outcome.found else None,
                   "first_bad_index": outcome.first_bad if outcome else None,
                   "candidates": ([items[i].to_dict() for i in outcome.candidates]
                                  if outcome and not outcome.found else []),
                   "skipped": [items[s["index"]].to_dict() for s in steps if s["verdict"] == search.SKIP]},
        "midpoints": len(steps), "builds": used,
        "sessions": judge.sessions_run if requests else judge.runs,
        "processes": judge.processes_run if requests else judge.runs,
        "seconds": time.monotonic() - started,
        "seconds_per_midpoint": sum(midpoint_s) / len(midpoint_s) if midpoint_s else None,
    }


def _no_regression_reason(end_runs, speed: bool) -> str:
    last = end_runs[-1]
    if speed:
        return f"the bad end is not slower than the good end beyond the threshold ({last.compare_verdict}: {last.reason})"
    where = "good end" if last.name.startswith("good") else "bad end"
    wanted = "pass" if where == "good end" else "fail"
    return f"the check does not {wanted} at the {where}: {last.outcome}{': ' + last.detail if last.detail else ''}"


def exit_status(report: dict) -> int:
    return 0 if report["result"]["status"] == FOUND else 1


def write_report(report: dict, out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SuiteError(f"cannot write into {out}: {err}") from None
    write_json_atomically(out / "bisect.json", report)
    return out / "bisect.json"


def dumps(report: dict) -> str:
    return json.dumps(json_ready(report), indent=1, allow_nan=False)


def _measurement(m: dict) -> str:
    if "ratio" not in m:  # a check's run
        return f"{m['outcome']}{': ' + m['detail'] if m['detail'] else ''} ({m['seconds']:.1f} s)"
    if m["ratio"] is None:
        return f"undecided: {m['reason']} ({m['seconds']:.0f} s)"
    interval = (f" [{m['ratio_ci_low']:.3f}, {m['ratio_ci_high']:.3f}]" if m["ratio_ci_low"] is not None else "")
    within_noise = m["verdict"] == "undecided" and m["compare_verdict"] != "untrusted"
    verdict = "undecided" if within_noise else m["compare_verdict"]
    return (f"ratio {m['ratio']:.3f}{interval}, {verdict}: {m['reason']}; "
            f"{m['processes']} processes a side, {m['seconds']:.0f} s")


def format_text(report: dict) -> str:
    what = (f"figure {report['figure']}: bad = regressed against the good end (interleaved A/B, "
            f"{report['rounds']} rounds, threshold {report['threshold']:.0%})" if report["kind"] == "speed"
            else f"check {report['check']}: good = passes, bad = fails")
    items = report["items"]
    lines = [f"bisect {len(items)} {report['items_kind']}s of {report['source']}, {what}",
             f"good {items[0]['label']}", f"bad  {items[-1]['label']}", ""]
    for m in report["ends"]["measurements"]:
        lines.append(f"ends    {m['name']:<13} {_measurement(m)}")
    for step in report["steps"]:
        position = f"{step['index'] + 1}/{len(items)}"
        lines.append(f"step {step['step']:<2} {position:<6} {step['verdict']:<5} {step['item']['label']}")
        lines += [f"        {m['name']:<13} {_measurement(m)}" for m in step["measurements"]]
    result = report["result"]
    lines.append("")
    if result["status"] == FOUND:
        lines.append(f"first bad {report['items_kind']}: {result['first_bad']['label']} "
                     f"({result['first_bad_index'] + 1}/{len(items)})")
    elif result["status"] == RANGE:
        lines.append(f"no single culprit: the first bad {report['items_kind']} is one of "
                     + ", ".join(c["label"] for c in result["candidates"]) + f" ({result['reason']})")
    elif result["status"] == GAVE_UP:
        lines.append(f"gave up: {result['reason']}")
    else:
        lines.append(f"no regression to bisect: {result['reason']}")
    if result["skipped"]:
        lines.append("skipped (could not be judged): " + ", ".join(s["label"] for s in result["skipped"]))
    per = f" (about {report['seconds_per_midpoint']:.2g} s a midpoint)" if report["seconds_per_midpoint"] else ""
    runs = (f"{report['sessions']} A/B sessions, {report['processes']} processes" if report["kind"] == "speed"
            else f"{report['sessions']} check runs")
    lines.append(f"{report['midpoints']} midpoints, {report['builds']} builds, {runs}, "
                 f"{report['seconds']:.0f} s in all{per}")
    return "\n".join(lines)
