"""A/B sessions of a known machine, generated: what `torchsuite ab` would have measured, without timing.

The template is a recorded session (tests/data/sessions/, two results files `torchsuite ab` wrote on
this project's 2-core VM at its defaults): each of its figures gives the fields every process
record has, and its processes the measurement's shape. A generated process replaces the measurement:

    median = figure's base median x build's factor x the machine's moment x the process's own draw

The machine's moment is what interleaving is for: it drifts from round to round (a random walk) and
jumps now and then (a neighbour arriving), the same for both processes of a round but for a little
drift between them; the process's own draw is what separates fresh interpreters (2-3% at one
thread in the recorded sessions, 4-7% at two). A
disturbed process (flagged `drift` or `contended`, as the timing core flags one whose canary moved)
is off by much more. Seeded: the same arguments give the same session.
"""
from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

RECORDED = Path(__file__).parent / "data" / "sessions"


@dataclass(frozen=True)
class Machine:
    walk_sd: float = 0.0  # the machine's log speed moves this much from one round to the next
    jump_every: float = 0.0  # chance that a round starts with a jump (a neighbour comes or goes)
    jump_sd: float = 0.0
    within_round_sd: float = 0.0  # the drift between a round's two processes
    process_sd: float = 0.025  # each fresh process's own placement (one thread: 2-3% in the recorded sessions)
    disturbed: float = 0.0  # chance that a process is disturbed (and flagged)
    disturbed_sd: float = 0.2
    lopsided: str | None = None  # "new": only that side's processes are ever disturbed


QUIET = Machine()
NOISY = Machine(walk_sd=0.08, jump_every=0.25, jump_sd=0.25, within_round_sd=0.03, process_sd=0.04, disturbed=0.1)


def templates(name: str = "quiet-planted") -> dict[str, dict]:
    """{figure: a process record} from a recorded session's base side."""
    (path,) = (RECORDED / name / "base").glob("*.json")
    records = [r for r in json.loads(path.read_text())["records"] if r.get("kind") == "timing"]
    return {r["figure"]: {**r, **r["processes"][0]} for r in records}


def session_maker(factors: dict[str, float | dict[str, float]], machine: Machine, seed: int,
                  figures: dict[str, dict] | None = None):
    """A stand-in for suite.ab.time_interleaved: each build (by its Interpreter's label) runs
    `factors[label]` times the template's time (a number, or one a figure: 1 where not named), on
    `machine`."""
    rng = random.Random(seed)
    figures = figures or templates()
    state = {"moment": 0.0}

    def time_interleaved(base, new, requests, rounds, say=lambda line: None, collected=None):
        collected = collected or {"rounds": 0, "session": uuid.UUID(int=rng.getrandbits(128)).hex,
                                  "base": {f: [] for f in figures}, "new": {f: [] for f in figures}}
        for round_index in range(collected["rounds"], collected["rounds"] + rounds):
            state["moment"] += rng.gauss(0, machine.walk_sd)
            if rng.random() < machine.jump_every:
                state["moment"] += rng.gauss(0, machine.jump_sd)
            order = ("base", "new") if round_index % 2 == 0 else ("new", "base")
            for position, side in enumerate(order):
                moment = state["moment"] + position * rng.gauss(0, machine.within_round_sd)
                factor = factors[(base if side == "base" else new).label]
                for figure, template in figures.items():
                    scale = factor.get(figure, 1.0) if isinstance(factor, dict) else factor
                    collected[side][figure].append(process(template, scale, moment, machine, side, rng, round_index))
        collected["rounds"] += rounds
        return collected

    return time_interleaved


def process(template: dict, factor: float, moment: float, machine: Machine, side: str, rng: random.Random,
            round_index: int) -> dict:
    median = template["median_s"] * factor * math.exp(moment + rng.gauss(0, machine.process_sd))
    flags = ["quick"]
    if rng.random() < machine.disturbed and machine.lopsided in (None, side):
        median *= math.exp(abs(rng.gauss(0, machine.disturbed_sd)))
        flags.append(rng.choice(["drift", "contended"]))
    canary = template["canary_before_s"] * math.exp(moment + rng.gauss(0, 0.015))
    return {**template, "median_s": median, "iqr_s": median * 0.03, "flags": flags, "round": round_index,
            "samples": [median * math.exp(rng.gauss(0, 0.03)) for _ in range(len(template["samples"]))],
            "canary_before_s": canary, "canary_after_s": canary}
