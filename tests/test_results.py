"""The results file: atomic rewrites, reload, unique names, clear errors on bad files."""
import json
import math
import os

import pytest

from suite import results
from suite.results import FutureSchemaError, ResultsFileError, ResultsStore


def _machine(name="alpha"):
    return {"name": name, "cpu": "test cpu", "cores": 2}


def _verdict(i):
    return {"kind": "conformance", "suite": "s", "case": f"c{i}", "check": "k", "device": "cpu",
            "passed": True, "detail": "", "seconds": 0.01}


def test_every_added_record_is_on_disk_and_reloads(tmp_path):
    store = ResultsStore(tmp_path, _machine())
    for i in range(3):
        store.add(_verdict(i))
        assert [r["case"] for r in results.load(store.path)["records"]] == [f"c{j}" for j in range(i + 1)]
    store.finish()
    data = results.load(store.path)
    assert data["status"] == "complete" and data["finished_at"]
    assert data["schema_version"] == results.SCHEMA_VERSION and data["machine"]["name"] == "alpha"
    assert os.listdir(tmp_path) == [store.path.name]  # no temp file left behind


def test_a_failed_rewrite_keeps_the_previous_complete_file(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, _machine())
    store.add(_verdict(0))

    def dump_half_then_fail(obj, f, **kwargs):
        f.write('{"format": "torchsuite-res')
        raise OSError("disk full")

    monkeypatch.setattr(results.json, "dump", dump_half_then_fail)
    with pytest.raises(OSError):
        store.add(_verdict(1))
    monkeypatch.undo()
    assert [r["case"] for r in results.load(store.path)["records"]] == ["c0"]
    assert os.listdir(tmp_path) == [store.path.name]


def test_non_finite_numbers_become_null_so_the_file_stays_json(tmp_path):
    store = ResultsStore(tmp_path, _machine())
    store.add({"kind": "timing", "median_s": math.nan, "peak_fraction": math.inf, "samples": [0.1, 0.2]})
    text = store.path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert results.load(store.path)["records"][0]["median_s"] is None


def test_two_runs_at_once_never_share_a_file(tmp_path):
    first, second = ResultsStore(tmp_path, _machine()), ResultsStore(tmp_path, _machine())
    assert first.path != second.path
    assert first.path.name.startswith("alpha-") and str(os.getpid()) in first.path.name


def test_machine_names_are_made_safe_for_file_names(tmp_path):
    store = ResultsStore(tmp_path, _machine("../evil name"))
    assert store.path.parent == tmp_path and "/" not in store.path.name


def test_a_newer_schema_is_a_clear_error(tmp_path):
    store = ResultsStore(tmp_path, _machine())
    data = json.loads(store.path.read_text())
    data["schema_version"] = results.SCHEMA_VERSION + 1
    store.path.write_text(json.dumps(data))
    with pytest.raises(FutureSchemaError, match="newer than this torchsuite understands"):
        results.load(store.path)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ('{"format": "torchsuite-results", "schema_version": 1, "records": [', "not valid JSON"),
    ('{"benchmarks": []}', "not a torchsuite results file"),
    ('[1, 2]', "not a torchsuite results file"),
])
def test_bad_files_are_results_file_errors(tmp_path, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsFileError, match=message):
        results.load(path)


def test_the_machine_section_names_the_hardware_and_the_stack():
    import torch

    from suite.environment import capture

    machine = capture("lab box")
    assert machine["name"] == "lab box" and machine["torch"] == torch.__version__
    for key in ("cpu", "cores", "memory_bytes", "os", "python", "torchvision", "torchaudio", "cuda", "cudnn",
                "gpus", "gpu_driver", "usable_cores", "collect_env"):
        assert key in machine, key
    assert "gcc_version" in machine["collect_env"] or "error" in machine["collect_env"]
    json.dumps(machine)  # JSON-ready as it is


def test_collect_env_shells_out_once_a_process_and_each_capture_gets_its_own_copy(monkeypatch):
    from torch.utils import collect_env

    from suite import environment

    calls = []
    real = collect_env.get_env_info
    monkeypatch.setattr(collect_env, "get_env_info", lambda: calls.append(1) or real())
    environment._collect_env_summary.cache_clear()
    first, second = environment.capture("a"), environment.capture("b")
    assert len(calls) == 1 and first["collect_env"] == second["collect_env"]
    first["collect_env"]["planted"] = True
    assert "planted" not in second["collect_env"] and "planted" not in environment.capture()["collect_env"]


def test_an_unusable_results_directory_is_a_results_file_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ResultsFileError, match="cannot create a results file"):
        ResultsStore(blocker / "results", _machine())


def test_a_version_1_file_is_read_in_this_schema_s_names(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({
        "format": results.FORMAT, "schema_version": 1, "status": "complete", "machine": {"name": "old"},
        "run": {"command": "converge", "precision": "bf16"},
        "records": [{"kind": "convergence", "model": "speech_cnn", "precision": "fp32"},
                    {"kind": "conformance", "suite": "compile", "expected": "divergent"},
                    {"kind": "conformance", "suite": "compile", "expected": "equivalent"}]}))
    data = results.load(path)
    assert data["schema_version"] == 2 and data["run"]["dtype"] == "bfloat16"
    assert "precision" not in data["records"][0] and data["records"][0]["dtype"] == "float32"
    assert [r["expected"] for r in data["records"][1:]] == ["fails", "passes"]


def test_a_batch_of_records_is_saved_at_most_once_a_second_and_in_full_when_it_ends(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, {"name": "m"})
    saves = []
    monkeypatch.setattr("suite.results.write_json_atomically", lambda path, data: saves.append(len(data["records"])))
    with store.batched(every_s=3600):
        for i in range(1000):
            store.add({"kind": "conformance", "case": str(i)})
        assert saves == []  # nothing rewritten a thousand times
    assert saves == [1000]
    store.add({"kind": "conformance", "case": "outside"})  # outside a batch: every record at once
    assert saves == [1000, 1001]
