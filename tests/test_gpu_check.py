"""scripts/gpu_check.sh and gpu_timings.py, as far as a machine without a GPU can check them."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suite.devices import cuda_count

REPO = Path(__file__).resolve().parents[1]
no_gpu_only = pytest.mark.skipif(cuda_count() > 0, reason="this machine has a GPU")


def load_gpu_timings():
    spec = importlib.util.spec_from_file_location("gpu_timings", REPO / "scripts" / "gpu_timings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@no_gpu_only
def test_gpu_check_without_cuda_stops_at_once_saying_why(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA GPU visible to torch" in done.stderr
    assert not list((tmp_path / "out").iterdir())  # nothing half-written


@no_gpu_only
def test_gpu_timings_without_cuda_is_exit_status_2(tmp_path, capsys):
    assert load_gpu_timings().main(["--out", str(tmp_path / "t.json")]) == 2
    assert "cuda" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_gpu_timings_writes_records_skips_and_calibrations(tmp_path, monkeypatch):
    """The file's logic, with CPU cases standing in for the GPU ones."""
    import suite.devices
    import suite.timing
    from suite.timing.plan import TimingCase

    cpu_cases = [TimingCase("speech_cnn", "eval", {"setup": "cpu", "quick": True, "min_run_time": 0.05}),
                 TimingCase("speech_cnn", "train", {"setup": "dataparallel"}, "needs 2 CUDA GPUs")]
    monkeypatch.setattr(suite.devices, "require_device", lambda kind: None)
    monkeypatch.setattr(suite.timing, "iter_setups", lambda devices, quick: iter(cpu_cases))
    monkeypatch.setattr(suite.timing, "calibrate_peak",
                        lambda device, dtype, quick: suite.timing.peak.calibrate_peak("cpu", "float32", quick=True))
    out = tmp_path / "deep" / "gpu_timings.json"
    assert load_gpu_timings().main(["--out", str(out), "--quick"]) == 0
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["records"]] == ["speech_cnn"]
    assert result["skipped"] == [{"case": cpu_cases[1].id, "reason": "needs 2 CUDA GPUs"}]
    assert len(result["calibrations"]) == 3 and result["failed"] == []
    assert result["environment"]["torch"]
