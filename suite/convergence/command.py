"""`torchsuite converge`: seeded runs of the chosen models to their targets, into a results file."""
from __future__ import annotations

import sys
from pathlib import Path

from suite.convergence.runs import plan_runs, run_job
from suite.convergence.score import group, score
from suite.data import RUN_SEEDS
from suite.errors import SuiteError
from suite.results import ResultsStore


def summary_lines(records: list[dict]) -> list[str]:
    """One line per model, device, dtype and data: its score, by the one scoring rule."""
    lines = []
    for (model, device, dtype, data), runs in group(records).items():
        result = score(runs)
        lines.append(f"{model} on {device}, {dtype}, {data} data: {result.converged}/{result.runs} "
                     f"converged; {result.describe()}")
    return lines


def converge(*, model_names: list[str] | None, device_request: str = "cpu", runs: int = 5,
             dtype: str = "float32", data: str = "auto", data_root=None, first_seed: int = 0,
             out_dir="results", machine_name: str | None = None, stream=None) -> Path:
    """Run, save each record as it arrives, print the scores; the results file's path."""
    from suite.cases.models import CASES
    from suite.convergence.learners import require_dtype
    from suite.devices import require_device
    from suite.environment import capture

    stream = stream if stream is not None else sys.stderr
    specs = CASES.select(model_names)
    device = require_device(device_request)
    require_dtype(dtype)
    if runs >= 1 and not (first_seed in RUN_SEEDS and first_seed + runs - 1 in RUN_SEEDS):
        raise SuiteError(f"seeds {first_seed} to {first_seed + runs - 1} leave the run seeds' range, "
                         f"{RUN_SEEDS.start} to {RUN_SEEDS.stop - 1}")
    jobs = plan_runs(specs, runs=runs, data=data, data_root=data_root, first_seed=first_seed)
    store = ResultsStore(out_dir, capture(machine_name), run={
        "command": "converge", "devices": [device.type], "models": [s.name for s in specs], "runs": runs,
        "dtype": dtype, "data": data, "first_seed": first_seed, "quick": False})
    stream.write(f"writing results to {store.path}\n")
    with store.recording(lambda message: stream.write(message + "\n")):
        for job in jobs:
            record = run_job(job, device=device, dtype=dtype, data_root=data_root)
            store.add(record)
            outcome = (f"reached {record['target']:.3g} in {record['steps_to_target']} steps, "
                       f"{record['time_to_target_s']:.1f} s" if record["converged"] else
                       f"not converged after {record['steps_run']} steps (accuracy {record['final_accuracy']:.3f})")
            stream.write(f"{record['model']} seed {record['seed']}: {outcome}\n")
            stream.flush()
    store.finish("complete")
    for line in summary_lines(store.records):
        stream.write(line + "\n")
    return store.path

