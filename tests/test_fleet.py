"""The results store (`torchsuite ingest`) and the fleet report: generated fleets with planted bad machines."""
import json

import pandas as pd
import pytest

from suite.cli import main
import fleets
from suite.report import build_report, compare, fleet, store
from test_report import asv_result_file, pytest_benchmark_file, read_comparison

MACHINES = 40


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory):
    return fleets.write_fleet(tmp_path_factory.mktemp("fleet") / "files", MACHINES)


@pytest.fixture(scope="module")
def fleet_store(fleet_files, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "store"
    summary = store.ingest(fleet_files, path)
    assert len(summary.ingested) == MACHINES and not summary.errors
    return path


@pytest.fixture(scope="module")
def fleet_report(fleet_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "fleet"
    build_report([fleet_store], out_dir=out)
    return out


def test_the_planted_machines_and_no_others_are_named_each_for_its_own_reason(fleet_store):
    diagnosis = fleet.diagnose([fleet_store])
    off = diagnosis.off().set_index("machine")["reasons"]
    planted = {fleets.machine_name(i): reason for i, (fault, reason) in fleets.PLANTED.items()
               if fault != "other_torch"}
    assert set(off.index) == set(planted)
    for machine, reason in planted.items():
        assert reason in off[machine]
        assert all(r.startswith(reason) for r in off[machine].split("; "))  # nothing else put it there
    assert "at 0.8" in off[fleets.machine_name(3)] and "at 0.6" in off[fleets.machine_name(7)]
    stacks = diagnosis.other_stacks()
    (other_torch,) = [fleets.machine_name(i) for i, (fault, _) in fleets.PLANTED.items() if fault == "other_torch"]
    assert stacks["names"].tolist() == [other_torch] and "torch 2.10.0" in stacks["cohort"].iloc[0]


def test_the_fleet_page_leads_with_the_machines_that_are_off_and_stays_a_page(fleet_report):
    page = (fleet_report / "report.md").read_text()
    first_screen = page.split("## Machines on another stack")[0]
    for index in fleets.PLANTED:
        name = fleets.machine_name(index)
        assert (name in first_screen) == (fleets.PLANTED[index][0] != "other_torch")
    assert fleets.machine_name(0) not in page  # a machine that is fine is a dot in a plot, not a line
    assert {"fleet.csv", "distributions.csv", "fleet_limits.png", "fleet_timings.png", "report.html"} <= {
        p.name for p in fleet_report.iterdir()}
    findings = pd.read_csv(fleet_report / "fleet.csv")
    assert set(findings["machine"]) == {fleets.machine_name(i) for i, (f, _) in fleets.PLANTED.items()
                                        if f != "other_torch"}
    spread = pd.read_csv(fleet_report / "distributions.csv")
    gemm = spread[spread["key"] == "gemm float32 cpu"].iloc[0]
    assert gemm["machines"] == MACHINES - 1 and gemm["off"] == 1 and gemm["p5"] <= gemm["median"] <= gemm["p95"]


def test_a_page_of_a_fleet_does_not_grow_with_its_machines(fleet_files, fleet_report, tmp_path):
    smaller = tmp_path / "smaller"
    build_report(fleet_files[:20], out_dir=smaller)
    assert len((smaller / "report.md").read_text().splitlines()) == len(
        (fleet_report / "report.md").read_text().splitlines())


def test_files_and_their_store_make_the_same_fleet_report(fleet_files, fleet_report, tmp_path):
    out = tmp_path / "from-files"
    build_report(fleet_files, out_dir=out)
    assert (out / "fleet.csv").read_text() == (fleet_report / "fleet.csv").read_text()
    assert not [p for p in tmp_path.rglob(".store")]  # the files' own store went with the staging


def test_ingesting_a_file_again_changes_nothing(fleet_files, fleet_store, capsys):
    manifest = (fleet_store / store.MANIFEST).read_text()
    assert main(["ingest", *map(str, fleet_files[:3]), "--store", str(fleet_store)]) == 0
    assert f"ingested 0 files into {fleet_store}; 3 already there" in capsys.readouterr().out
    assert (fleet_store / store.MANIFEST).read_text() == manifest
    assert sorted(store.run_ids(fleet_store)) == sorted(set(store.run_ids(fleet_store)))


def test_a_corrupt_file_is_a_line_of_its_own_and_the_rest_are_ingested(fleet_files, tmp_path, capsys):
    cut = tmp_path / "cut.json"
    cut.write_text(fleet_files[0].read_text()[:1000])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": "world"}))
    target = tmp_path / "store"
    code = main(["ingest", str(cut), *map(str, fleet_files[:2]), str(other), str(tmp_path / "absent.json"),
                 "--store", str(target)])
    captured = capsys.readouterr()
    assert code == 2
    errors = captured.err.splitlines()
    assert len(errors) == 3 and all(e.startswith("torchsuite: error:") for e in errors)
    assert "not valid JSON" in errors[0] and "not a torchsuite" in errors[1] and "absent.json" in errors[2]
    assert "ingested 2 files" in captured.out and store.machine_count(target) == 2


def test_an_ingest_that_dies_half_way_leaves_the_store_as_it_was(fleet_files, tmp_path, monkeypatch):
    target = tmp_path / "store"
    store.ingest(fleet_files[:2], target)
    manifest = (target / store.MANIFEST).read_text()

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write_json_atomically", die)
    with pytest.raises(KeyboardInterrupt):
        store.ingest(fleet_files[2:4], target, workers=1)
    monkeypatch.undo()
    assert (target / store.MANIFEST).read_text() == manifest and store.machine_count(target) == 2
    named = {target / part for parts in json.loads(manifest)["parts"].values() for part in parts}
    orphans = set(target.rglob("*.parquet")) - named
    assert orphans  # the dead ingest's parts, which nothing reads
    store.ingest(fleet_files[2:4], target, workers=1)  # they are removed, and its files added
    assert store.machine_count(target) == 4 and not any(p.exists() for p in orphans)


def test_a_small_store_gives_the_report_what_its_files_give(fleet_files, tmp_path, tables_only):
    small = tmp_path / "store"
    store.ingest(fleet_files[:2], small)
    assert store.load_inputs([small]) == store.load_inputs(fleet_files[:2])  # what the report is made of
    out = tmp_path / "report"
    build_report([small], out_dir=out)
    assert set(read_comparison(out)["machine"]) == {fleets.machine_name(0), fleets.machine_name(1)}


def test_compare_takes_a_machine_of_a_store_as_a_file(fleet_files, fleet_store):
    by_files = compare.compare(fleet_files[1], fleet_files[3])
    by_store = compare.compare(f"{fleet_store}@{fleets.machine_name(1)}", f"{fleet_store}@{fleets.machine_name(3)}")
    assert [r.verdict for r in by_files[1]] == [r.verdict for r in by_store[1]]
    assert [r.ratio for r in by_files[1]] == [r.ratio for r in by_store[1]]


def test_other_formats_go_into_a_store_and_come_back_the_same(tmp_path):
    files = [pytest_benchmark_file(tmp_path), asv_result_file(tmp_path)]
    target = tmp_path / "store"
    assert not store.ingest(files, target).errors
    runs = {r.machine_name: r for r in store.load_runs(target)}
    assert runs["gamma"].timings[0]["median_s"] == 0.02 and runs["delta"].timings[0]["median_s"] == 0.05
    assert runs["delta"].format == "asv"


@pytest.mark.parametrize("spec, message", [
    ("{store}@nobody", "no machine 'nobody' in the store"),
    ("{store}", "is a results store: name one machine of it as"),
])
def test_a_store_that_cannot_answer_compare_is_a_one_line_error(fleet_store, fleet_files, capsys, spec, message):
    assert main(["compare", spec.format(store=fleet_store), str(fleet_files[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_directory_that_is_not_a_store_is_left_alone(tmp_path, fleet_files, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["ingest", str(fleet_files[0]), "--store", str(tmp_path)]) == 2
    assert "not a results store" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / store.MANIFEST).write_text("{")
    assert main(["report", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "unreadable store manifest" in capsys.readouterr().err
