"""Convergence runs of registered models: their data, their loop, one record per seeded run.

Record (kind "convergence"): model, device, dtype, seed, data ("real", "synthetic" or a
subset a package ships, "mnist5k"),
loop, target, converged, time_to_target_s, steps_to_target, epochs_to_target, final_accuracy,
the cap, the loss curve and the settings the run used; docs/results-format.md lists them all.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator

import torch

from suite.cases.models import CASES, ModelSpec, RealTarget, SyntheticTask
from suite.convergence.learners import LOOPS, require_dtype
from suite.convergence.loop import run_to_target
from suite.data import SUBSETS
from suite.errors import SuiteError

# auto, the model's whole dataset under the data root, the synthetic task, or a subset of real
# data a package ships (suite.data.SUBSETS; the models that declare a target for it).
DATA_CHOICES = ("auto", "real", "synthetic", *SUBSETS)
DEFAULT_RUNS, QUICK_RUNS = 5, 3
HELDOUT_BATCH = 1000  # held-out samples per forward pass: bounds the evaluation's memory


class ConvergenceInputError(SuiteError):
    pass


def require_runs(runs: int) -> int:
    if not isinstance(runs, int) or runs < 1:
        raise ConvergenceInputError(f"--runs must be a whole number of at least 1, not {runs!r}")
    return runs


def require_targets(spec: ModelSpec):
    if spec.convergence is None:
        raise ConvergenceInputError(f"model {spec.name!r} declares no convergence targets")
    return spec.convergence


def _chunks(inputs: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(inputs.split(HELDOUT_BATCH), labels.split(HELDOUT_BATCH)))


def _synthetic_setup(spec: ModelSpec, task: SyntheticTask, batch_size: int, seed: int, device):
    from suite.data import synthetic_task_batches, synthetic_task_heldout

    heldout = _chunks(*(t.to(device) for t in synthetic_task_heldout(spec, task)))
    epochs = [itertools.islice(synthetic_task_batches(spec, task, batch_size, seed), task.max_steps)]
    settings = {"target": task.accuracy, "eval_every": task.eval_every, "cap": {"max_steps": task.max_steps},
                "task": {k: v for k, v in dataclasses.asdict(task).items() if k != "expected_s"}}
    return epochs, (lambda: heldout), settings, {"target": task.accuracy, "eval_every": task.eval_every,
                                                  "max_steps": task.max_steps}


def require_subset_target(spec: ModelSpec, data: str) -> RealTarget:
    target = require_targets(spec).subsets.get(data)
    if target is None:
        having = [s.name for s in CASES if s.convergence and data in s.convergence.subsets]
        raise ConvergenceInputError(f"model {spec.name!r} has no {data} data; {data} is for "
                                    f"{', '.join(having) or 'no model'} (pass --models)")
    return target


def _real_setup(spec: ModelSpec, target: RealTarget, batch_size: int, seed: int, data_root,
                data: str = "real"):
    from torch.utils.data import DataLoader

    from suite.data import real_dataset, subset_dataset

    if data == "real":
        train = real_dataset(spec, data_root, split="train")
        test = real_dataset(spec, data_root, split="test")
    else:
        train, test = subset_dataset(data, split="train"), subset_dataset(data, split="test")
    loader = DataLoader(train, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    epochs = (loader for _ in range(target.max_epochs))  # each pass reshuffles from the seeded generator
    test_loader = DataLoader(test, batch_size=HELDOUT_BATCH)
    settings = {"target": target.accuracy, "eval_every": "epoch", "cap": {"max_epochs": target.max_epochs},
                "dataset": spec.dataset if data == "real" else data,
                "train_samples": len(train), "test_samples": len(test),
                "target_source": target.source, "target_measured_here": target.measured_here}
    return epochs, (lambda: test_loader), settings, {"target": target.accuracy}


def has_real_data(spec: ModelSpec, data_root) -> bool:
    from suite.data import DataUnavailableError, real_dataset

    try:
        real_dataset(spec, data_root, split="test")
        return True
    except DataUnavailableError:
        return False


def choose_data(spec: ModelSpec, data: str, data_root) -> str:
    """'real' or 'synthetic' for this model: `auto` takes the real dataset when it is under data_root."""
    if data not in DATA_CHOICES:
        raise ConvergenceInputError(f"unknown data {data!r}; valid: {', '.join(DATA_CHOICES)}")
    if data == "auto":
        return "real" if has_real_data(spec, data_root) else "synthetic"
    if data in SUBSETS:
        from suite.data import subset_dataset

        require_subset_target(spec, data)
        subset_dataset(data, split="test")  # raises DataUnavailableError naming what is missing
        return data
    if data == "real" and not has_real_data(spec, data_root):
        from suite.data import real_dataset

        real_dataset(spec, data_root, split="test")  # raises DataUnavailableError naming what is missing
    return data


def train_to_target(spec: ModelSpec, *, device: torch.device, dtype: str = "float32", seed: int = 0,
                    data: str = "synthetic", data_root=None, loop: str = "corrected",
                    task: SyntheticTask | None = None, real_target: RealTarget | None = None,
                    batch_size: int | None = None) -> dict:
    """One seeded run of `spec` from scratch to its target; the convergence record.

    `task`, `real_target` and `batch_size` replace the registry's (tests use them for short runs).
    """
    require_dtype(dtype)
    if loop not in LOOPS:
        raise ConvergenceInputError(f"unknown loop {loop!r}; valid: {', '.join(LOOPS)}")
    targets = require_targets(spec)
    batch_size = batch_size or targets.batch_size
    if data == "synthetic":
        epochs, heldout, settings, loop_args = _synthetic_setup(spec, task or targets.synthetic, batch_size,
                                                                seed, device)
    elif data == "real":
        epochs, heldout, settings, loop_args = _real_setup(spec, real_target or targets.real, batch_size, seed,
                                                           data_root)
    elif data in SUBSETS:
        epochs, heldout, settings, loop_args = _real_setup(
            spec, real_target or require_subset_target(spec, data), batch_size, seed, data_root, data=data)
    else:
        raise ConvergenceInputError(f"data must be 'real', 'synthetic' or one of {', '.join(SUBSETS)}, "
                                    f"not {data!r}")
    learner = LOOPS[loop](spec, device, dtype, seed)
    outcome = run_to_target(learner, epochs, heldout, device=device, **loop_args)
    return {"kind": "convergence", "model": spec.name, "device": device.type, "dtype": dtype,
            "seed": seed, "data": data, "loop": loop, "batch_size": batch_size,
            "optimizer": {"name": spec.optimizer.__name__, **spec.optimizer_kwargs},
            "threads": torch.get_num_threads(), **settings, **outcome}


def seeds(runs: int, first_seed: int = 0) -> list[int]:
    """The runs' seeds: consecutive from `first_seed`, so two machines given the same first seed
    train on the same batches from the same initial weights."""
    return list(range(first_seed, first_seed + require_runs(runs)))


@dataclasses.dataclass(frozen=True)
class Job:
    """One planned run: which model, on which data, with which seed."""

    spec: ModelSpec
    data: str  # "real", "synthetic" or a subset's name
    seed: int

    def estimate_s(self) -> float:
        """For --dry-run: the synthetic task's declared time on a small machine (real data: unknown, 0)."""
        return self.spec.convergence.synthetic.expected_s if self.data == "synthetic" else 0.0


def plan_runs(specs, *, runs: int, data: str = "auto", data_root=None, first_seed: int = 0) -> list[Job]:
    """Every model's seeded runs; bad input (runs, data, a model without targets) fails here, before any run."""
    run_seeds = seeds(runs, first_seed)
    for spec in specs:
        require_targets(spec)
    chosen = {spec.name: choose_data(spec, data, data_root) for spec in specs}
    return [Job(spec, chosen[spec.name], seed) for spec in specs for seed in run_seeds]


def run_job(job: Job, *, device: torch.device, dtype: str = "float32", data_root=None,
            quick: bool = False) -> dict:
    return {**train_to_target(job.spec, device=device, dtype=dtype, seed=job.seed, data=job.data,
                              data_root=data_root), "quick": quick}
