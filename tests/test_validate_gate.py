"""scripts/validate_gate.py, the gate's acceptance test: its plant still fits the train step it plants in."""
import importlib.util
import time
import types
from pathlib import Path

import pytest
import torch

from suite.cases.models import CASES as MODELS

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("validate_gate", ROOT / "scripts" / "validate_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plant_spins_a_share_of_each_train_step(monkeypatch):
    gate = _script()
    planted = types.ModuleType("planted_steps")
    exec(compile(gate.plant((ROOT / "suite" / "timing" / "steps.py").read_text()), "planted_steps", "exec"),
         planted.__dict__)
    step = planted.build_step(MODELS.get("mnist_cnn"), "train", torch.device("cpu"), 2)
    # A clock at 0 s when the step starts and at 100 s once the optimizer has stepped, then a second
    # later at every reading: the plant spins until a quarter of the step's 101 s has passed.
    readings = []
    monkeypatch.setattr(time, "perf_counter",
                        lambda: readings.append(99.0 + len(readings) if readings else 0.0) or readings[-1])
    step()
    end = 100.0 + gate.PLANTED_SHARE * 101.0
    assert readings[:3] == [0.0, 100.0, 101.0] and readings[-2] < end <= readings[-1], readings


def test_a_train_step_without_the_lines_it_plants_around_is_refused():
    with pytest.raises(ValueError, match="no single 'optimizer.step"):
        _script().plant("        optimizer.zero_grad(set_to_none=True)\n")
