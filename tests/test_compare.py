"""`torchsuite compare`: the regression gate, on real runs of this machine and on bad input."""
import copy
import io
import json

import pytest

from suite import results
from suite.cli import main
from suite.report.compare import compare
from suite.runner import run_suite


def quick_run(root, name):
    return run_suite(device_request="cpu", model_names=["speech_cnn"], quick=True, out_dir=root / name,
                     report_dir=root / f"{name}-report", machine_name="box", verdict_sources=[],
                     stream=io.StringIO())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two quick runs of this machine, back to back."""
    root = tmp_path_factory.mktemp("compare")
    return quick_run(root, "first"), quick_run(root, "second")


def slower(data: dict, factor: float) -> dict:
    out = copy.deepcopy(data)
    for record in out["records"]:
        if record["kind"] == "timing":
            for key in ("median_s", "iqr_s"):
                record[key] *= factor
            record["samples"] = [s * factor for s in record["samples"]]
            record["throughput"] /= factor
    return out


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_two_runs_back_to_back_are_no_regression(two_runs, capsys):
    assert main(["compare", str(two_runs[0]), str(two_runs[1])]) == 0
    out = capsys.readouterr().out
    assert "regressed" in out.splitlines()[-1] and out.splitlines()[-1].startswith("0 regressed")


def test_every_time_thirty_percent_longer_is_a_regression(two_runs, tmp_path, capsys):
    slow = write(tmp_path / "slow.json", slower(results.load(two_runs[0]), 1.3))
    header, rows = compare(two_runs[0], slow)
    judged = [r for r in rows if r.verdict != "untrusted"]
    assert judged, [(r.figure, r.why) for r in rows]  # a quiet machine gives some clean figures
    assert all(r.verdict == "regressed" and r.ratio == pytest.approx(1.3) for r in judged)
    assert all(r.why.startswith("flagged") or "samples" in r.why for r in rows if r.verdict == "untrusted")
    assert main(["compare", str(two_runs[0]), str(slow)]) == 1
    faster = write(tmp_path / "fast.json", slower(results.load(two_runs[0]), 1 / 1.3))
    assert {r.verdict for r in compare(two_runs[0], faster)[1]} <= {"improved", "untrusted"}


def test_a_machine_that_ran_slower_as_a_whole_is_untrusted_not_regressed(two_runs, tmp_path):
    data = slower(results.load(two_runs[0]), 1.3)
    for record in data["records"]:
        if record["kind"] == "timing":  # the canary slowed down with everything else
            record["canary_before_s"] *= 1.3
            record["canary_after_s"] *= 1.3
    header, rows = compare(two_runs[0], write(tmp_path / "slow-machine.json", data))
    assert {r.verdict for r in rows} == {"untrusted"}
    assert header["counts"]["regressed"] == 0


def test_json_rows_are_the_table_rows_sorted_by_ratio(two_runs, tmp_path, capsys):
    slow = write(tmp_path / "slow.json", slower(results.load(two_runs[0]), 1.3))
    main(["compare", str(two_runs[0]), str(slow), "--json", "--out", str(tmp_path / "gate")])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "gate" / "compare.json").read_text())
    ratios = [row["ratio"] for row in printed["rows"]]
    assert ratios == sorted(ratios) and len(ratios) == 3  # speech_cnn: train, eval, DDP train
    assert (tmp_path / "gate" / "compare.txt").read_text().splitlines()[-1].endswith("untrusted")


def test_the_header_says_where_each_file_came_from(two_runs, capsys):
    environment = results.load(two_runs[0])["machine"]
    assert "torch_git_version" in environment and "suite_commit" in environment
    main(["compare", str(two_runs[0]), str(two_runs[1])])
    header = capsys.readouterr().out.splitlines()[:2]
    assert header[0].startswith("baseline box") and header[1].startswith("new      box")
    assert all(f"torch {environment['torch']}" in line for line in header)


@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "nothing in common", "bad threshold"])
def test_bad_input_is_one_line_and_exit_two(two_runs, tmp_path, capsys, case):
    other = str(two_runs[1])
    args = {"missing": [str(tmp_path / "nope.json"), other],
            "truncated": [str(write(tmp_path / "cut.json", {}).with_name("cut.json")), other],
            "foreign": [str(write(tmp_path / "foreign.json", {"hello": "world"})), other],
            "nothing in common": [str(two_runs[0]), other],
            "bad threshold": [str(two_runs[0]), other, "--threshold", "0"]}[case]
    if case == "truncated":
        (tmp_path / "cut.json").write_text(two_runs[0].read_text()[:200])
    if case == "nothing in common":
        data = results.load(two_runs[1])
        for record in data["records"]:
            record["model"] = "another_model"
        args[1] = str(write(tmp_path / "other.json", data))
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchsuite: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
