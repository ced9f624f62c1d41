"""asv and benchmarks/models.py: the adapter in this process (default), and a quick asv pass against
the installed environment recording the core's numbers for the models asked for (`slow`: asv starts
an interpreter per benchmark, about 20 s)."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suite.devices import cuda_count

REPO = Path(__file__).resolve().parents[1]
MACHINE = "torchsuite-test"


def _asv(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "asv", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _head_commit():
    if shutil.which("git") is None:
        pytest.skip("git is needed for --set-commit-hash")
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout with a commit: {done.stderr.strip()}")
    return done.stdout.strip()


def _results(results_dir: Path) -> dict:
    """{(benchmark, model, mode, setup): value} from asv's result file (format 2, columns)."""
    (path,) = [p for p in (results_dir / MACHINE).glob("*.json") if p.name != "machine.json"]
    data = json.loads(path.read_text())
    column = {name: i for i, name in enumerate(data["result_columns"])}
    values = {}
    for name, row in data["results"].items():
        params = row[column["params"]]
        for index, value in enumerate(row[column["result"]] or []):
            model = params[0][index // (len(params[1]) * len(params[2]))]
            mode = params[1][index // len(params[2]) % len(params[1])]
            setup = params[2][index % len(params[2])]
            values[(name, model.strip("'"), mode.strip("'"), setup.strip("'"))] = value
    return values


@pytest.fixture
def asv_models(monkeypatch):
    """benchmarks/models.py as asv imports it with the variables the real run below sets."""
    import importlib

    for name, value in (("TORCHSUITE_QUICK", "1"), ("TORCHSUITE_MODELS", "speech_cnn"),
                        ("TORCHSUITE_VARIANTS", "cpu,cuda-ddp")):
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(REPO))
    module = importlib.import_module("benchmarks.models")
    yield importlib.reload(module)
    sys.modules.pop("benchmarks.models", None)


def test_asv_sees_the_cores_samples_through_its_clock_and_absent_hardware_as_a_skip(asv_models):
    # What asv does with benchmarks/models.py, in this process: the real asv run is `slow` (below)
    Models = asv_models.Models
    assert Models.params == (["speech_cnn"], ["train", "eval", "serve"], ["cpu", "cuda-ddp"])
    record = {"samples": [0.25, 0.5, 0.125], "throughput": 12.0, "peak_fraction": 0.1, "peak_mem_bytes": 7}
    records = {"speech_cnn/train/cpu": record, "speech_cnn/eval/cpu": {"error": "RuntimeError: planted"}}
    bench = Models()
    bench.setup(records, "speech_cnn", "train", "cpu")
    assert bench.repeat[:2] == (3, 3)  # as many asv samples as the core took
    elapsed = []
    for _ in range(3):
        bench.setup(records, "speech_cnn", "train", "cpu")  # asv sets up again before every sample
        before = bench.timer()
        bench.time_iteration(records, "speech_cnn", "train", "cpu")
        elapsed.append(bench.timer() - before)
    assert elapsed == record["samples"]
    assert bench.track_throughput(records, "speech_cnn", "train", "cpu") == 12.0
    with pytest.raises(RuntimeError, match="planted"):  # one failed case: asv records a failure
        bench.setup(records, "speech_cnn", "eval", "cpu")
    if cuda_count() < 2:
        with pytest.raises(NotImplementedError):  # absent hardware: asv records a skip
            bench.setup(records, "speech_cnn", "train", "cuda-ddp")


@pytest.mark.slow
def test_quick_asv_run_records_the_models_asked_for_on_cpu(tmp_path):
    commit = _head_commit()
    config = json.loads("\n".join(line for line in (REPO / "asv.conf.json").read_text().splitlines()
                                  if not line.strip().startswith("//")))
    config.update(repo=str(REPO), benchmark_dir=str(REPO / "benchmarks"),
                  results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"),
                  env_dir=str(tmp_path / "env"))
    config_path = tmp_path / "asv.conf.json"
    config_path.write_text(json.dumps(config))
    # asv keeps its machine file in $HOME; a private one leaves the user's alone.
    # One model (what asv does for one it does for all): the default run's cost stays in hand.
    # cuda-ddp: a variant this machine may lack, which must be a skip
    env = {**os.environ, "HOME": str(tmp_path), "TORCHSUITE_QUICK": "1", "TORCHSUITE_MODELS": "speech_cnn",
           "TORCHSUITE_VARIANTS": "cpu,cuda-ddp"}
    machine = _asv(["machine", "--yes", "--machine", MACHINE, "--config", str(config_path)], env, tmp_path)
    assert machine.returncode == 0, machine.stderr
    run = _asv(["run", "--config", str(config_path), "-E", f"existing:{sys.executable}",
                "--set-commit-hash", commit, "--quick", "--machine", MACHINE,
                "--bench", r"Models\.(time_iteration|track_throughput)"], env, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    values = _results(tmp_path / "results")
    for mode in ("train", "eval"):
        seconds = values[("models.Models.time_iteration", "speech_cnn", mode, "cpu")]
        throughput = values[("models.Models.track_throughput", "speech_cnn", mode, "cpu")]
        assert seconds > 0 and throughput > 0, (mode, seconds, throughput)
    if cuda_count() < 2:  # absent hardware is a skip, which asv stores as NaN, not a failure
        assert math.isnan(values[("models.Models.time_iteration", "speech_cnn", "train", "cuda-ddp")])
    assert {model for _, model, _, _ in values} == {"speech_cnn"}  # no other asked for
