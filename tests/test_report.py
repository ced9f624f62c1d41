"""`torchsuite report`: merging machines, speedups, flags, other tools' formats, bad input."""
import copy
import csv
import json

import pandas as pd
import pytest

from suite import results
from suite.cli import main
from suite.report import build_report, sources

REPORT_FILES = ["comparison.csv", "report.md", "report.html", "throughput.png", "speedup.png",
                "scaling.png", "peak_fraction.png"]


@pytest.fixture(autouse=True)
def _pictures_only_where_looked_at(request):
    if request.node.get_closest_marker("draws_plots") is None:
        request.getfixturevalue("tables_only")


def twice_as_fast(data: dict, name: str) -> dict:
    """The same run as if on a machine exactly twice as fast."""
    faster = copy.deepcopy(data)
    faster["machine"]["name"] = name
    for record in faster["records"]:
        if record["kind"] == "timing":
            record["median_s"] /= 2
            record["iqr_s"] /= 2
            record["samples"] = [s / 2 for s in record["samples"]]
            for bound in ("ci95_low_s", "ci95_high_s"):
                record[bound] = record[bound] / 2 if record.get(bound) is not None else None
            record["throughput"] *= 2
            record["achieved_flops_per_s"] *= 2
            record["peak_fraction"] *= 2
    return faster


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def read_comparison(out):
    return pd.read_csv(out / "comparison.csv")


@pytest.mark.draws_plots
def test_a_machine_twice_as_fast_shows_speedup_two_in_every_row(real_run, tmp_path, capsys):
    beta = write(tmp_path / "beta.json", twice_as_fast(results.load(real_run), "beta"))
    out = tmp_path / "report"
    assert main(["report", str(real_run), str(beta), "--baseline", "alpha", "--out", str(out)]) == 0
    table = read_comparison(out)
    assert set(table["machine"]) == {"alpha", "beta"}
    assert (table.loc[table["machine"] == "beta", "speedup"] == 2.0).all()
    assert (table.loc[table["machine"] == "alpha", "speedup"] == 1.0).all()
    # A quick run's figures may record no interval; those that do bound a speedup of exactly 2.
    with_interval = table[(table["machine"] == "beta") & table["speedup_ci_low"].notna()]
    assert ((with_interval["speedup_ci_low"] <= 2.0) & (2.0 <= with_interval["speedup_ci_high"])).all()
    assert not table["missing"].any()
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name


def test_one_row_per_machine_model_mode_setup_and_batch(real_run, tmp_path):
    beta = write(tmp_path / "beta.json", twice_as_fast(results.load(real_run), "beta"))
    out = tmp_path / "report"
    build_report([real_run, beta], out_dir=out)
    table = read_comparison(out)
    key = ["machine", "model", "mode", "device", "setup", "world_size", "batch_size", "dtype", "channels_last",
           "threads_setting"]
    assert not table.duplicated(subset=key).any()
    timings = [r for r in results.load(real_run)["records"] if r["kind"] == "timing"]
    assert len(table) == 2 * len(timings)


def test_the_baseline_defaults_to_the_first_files_machine(real_run, tmp_path):
    beta = write(tmp_path / "beta.json", twice_as_fast(results.load(real_run), "beta"))
    out = tmp_path / "report"
    build_report([beta, real_run], out_dir=out)
    table = read_comparison(out)
    assert (table.loc[table["machine"] == "alpha", "speedup"] == 0.5).all()


def test_rows_on_one_machine_only_are_flagged_missing_never_zero(real_run, tmp_path):
    data = twice_as_fast(results.load(real_run), "beta")
    dropped = next(r for r in data["records"] if r["kind"] == "timing")
    data["records"].remove(dropped)
    beta = write(tmp_path / "beta.json", data)
    out = tmp_path / "report"
    build_report([real_run, beta], out_dir=out)
    table = read_comparison(out)
    missing = table[table["missing"]]
    assert len(missing) == 1 and missing.iloc[0]["machine"] == "beta"
    assert missing.iloc[0]["model"] == dropped["model"] and missing.iloc[0]["mode"] == dropped["mode"]
    assert pd.isna(missing.iloc[0]["median_s"]) and pd.isna(missing.iloc[0]["speedup"])
    assert "missing on beta" in missing.iloc[0]["flags"]
    assert "missing" in (out / "report.md").read_text()


def test_noisy_figures_are_flagged(real_run, tmp_path):
    data = results.load(real_run)
    record = next(r for r in data["records"] if r["kind"] == "timing")
    record["iqr_s"] = record["median_s"] * 0.5
    path = write(tmp_path / "noisy.json", data)
    out = tmp_path / "report"
    build_report([path], out_dir=out)
    table = read_comparison(out)
    row = table[(table["mode"] == record["mode"]) & (table["setup"] == record["setup"])
                & (table["world_size"] == record["world_size"])]
    assert row["noisy"].all() and row["flags"].str.contains("noisy").all()
    assert "(noisy" in (out / "report.md").read_text()


def test_flags_of_the_record_reach_tables_and_csv(real_run, tmp_path):
    data = results.load(real_run)
    record = next(r for r in data["records"] if r["kind"] == "timing")
    record["flags"], record["iqr_s"] = ["contended", "drift", "quick"], 0.0  # and not noisy
    out = tmp_path / "report"
    build_report([write(tmp_path / "flagged.json", data)], out_dir=out)
    table = read_comparison(out)
    row = table[(table["mode"] == record["mode"]) & (table["setup"] == record["setup"])
                & (table["world_size"] == record["world_size"])].iloc[0]
    assert row["figure_flags"] == "contended drift quick" and row["flags"] == "contended; drift"
    assert "(contended, drift)" in (out / "report.md").read_text()


@pytest.mark.parametrize(("change", "expected"), [
    ({"quick": False}, "full vs quick on the baseline"),
    ({"torch": "2.10.0"}, "torch 2.10.0 vs"),
    ({"settings": {"matmul_allow_tf32": True}}, "settings differ from the baseline's"),
])
def test_figures_taken_differently_from_the_baselines_are_marked_not_comparable(real_run, tmp_path,
                                                                                  change, expected):
    other = twice_as_fast(results.load(real_run), "beta")
    for record in other["records"]:
        if record["kind"] == "timing":
            for key, value in change.items():
                record[key] = {**record[key], **value} if isinstance(value, dict) else value
    out = tmp_path / "report"
    build_report([real_run, write(tmp_path / "beta.json", other)], out_dir=out)
    table = read_comparison(out)
    beta, alpha = table[table["machine"] == "beta"], table[table["machine"] == "alpha"]
    assert beta["differs"].str.contains(expected, regex=False).all(), beta["differs"].tolist()
    assert alpha["differs"].isna().all()  # the baseline against itself is like for like
    assert "not comparable" in (out / "report.md").read_text()


def test_like_for_like_machines_are_not_marked(real_run, tmp_path):
    out = tmp_path / "report"
    build_report([real_run, write(tmp_path / "beta.json", twice_as_fast(results.load(real_run), "beta"))],
                 out_dir=out)
    assert read_comparison(out)["differs"].isna().all()
    assert "not comparable" not in (out / "report.md").read_text().split("## How to read")[0]


@pytest.mark.draws_plots
def test_report_shows_environments_conformance_and_escapes_html(real_run, tmp_path):
    out = tmp_path / "report"
    build_report([real_run], out_dir=out)
    markdown = (out / "report.md").read_text()
    headings = ("## Summary", "## Throughput",
                "## Fraction of each machine's measured peak", "## Multi-process", "## Conformance", "## Machines")
    # The reader's question first (checks, speed, flags), the machine inventory last.
    assert [markdown.find(h) for h in headings] == sorted(markdown.find(h) for h in headings)
    assert -1 not in [markdown.find(h) for h in headings]
    summary = markdown.split("## Summary")[1].split("##")[0]
    assert "checks failed" in summary and "flagged timings" in summary
    # one machine: its speedup against itself says nothing
    assert "## Geometric mean" not in markdown and "## Speedup against" not in markdown
    assert "FAIL" in markdown and "torch" in markdown
    page = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert 'src="data:image/png;base64,' in page  # self-contained: plots embedded


def test_an_interrupted_run_is_reported_as_incomplete(real_run, tmp_path):
    data = results.load(real_run)
    data["status"] = "interrupted"
    out = tmp_path / "report"
    build_report([write(tmp_path / "cut.json", data)], out_dir=out)
    assert "Incomplete runs" in (out / "report.md").read_text()


def _bad_input_cases(real_run, tmp_path):
    text = real_run.read_text()
    future = json.loads(text)
    future["schema_version"] = results.SCHEMA_VERSION + 1
    empty = json.loads(text)
    empty["records"] = []
    return {
        "missing": ([tmp_path / "nope.json"], [], "no such file"),
        "truncated": ([_write_text(tmp_path / "cut.json", text[: len(text) // 2])], [], "not valid JSON"),
        "not results": ([write(tmp_path / "other.json", {"hello": "world"})], [], "not a torchsuite"),
        "future schema": ([write(tmp_path / "future.json", future)], [], "newer than this torchsuite"),
        "unknown baseline": ([real_run], ["--baseline", "gamma"], "unknown baseline machine 'gamma'"),
        "empty": ([write(tmp_path / "empty.json", empty)], [], "no timing or conformance records"),
    }


def _write_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["missing", "truncated", "not results", "future schema", "unknown baseline",
                                  "empty"])
def test_bad_input_is_one_line_and_writes_nothing(real_run, tmp_path, capsys, case):
    files, extra, message = _bad_input_cases(real_run, tmp_path)[case]
    out = tmp_path / "out"
    assert main(["report", *map(str, files), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchsuite: error:") and err.count("\n") == 1 and message in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]


def test_a_failure_midway_leaves_the_previous_report_untouched(real_run, tmp_path, monkeypatch):
    out = tmp_path / "report"
    build_report([real_run], out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("plotting broke")

    from suite.report import plots

    monkeypatch.setattr(plots, "write_plots", fail)
    with pytest.raises(RuntimeError):
        build_report([real_run], out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


# --- other tools' formats, written as their documentation describes them -------------------

def pytest_benchmark_file(tmp_path, node="gamma", median=0.02):
    """pytest-benchmark's --benchmark-json layout (with --benchmark-save-data's raw "data")."""
    data = [median * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
    bench = {"group": None, "name": "test_train_speed[speech_cnn-train]", "fullname": "tests/test_timing.py::x",
             "params": {"model": "speech_cnn", "mode": "train"}, "param": "speech_cnn-train",
             "extra_info": {"setup": "cpu", "device": "cpu", "batch_size": 100, "dtype": "float32"},
             "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5},
             "stats": {"min": min(data), "max": max(data), "mean": median, "stddev": 0.0001, "rounds": 5,
                       "median": median, "iqr": data[3] - data[1], "q1": data[1], "q3": data[3],
                       "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": min(data),
                       "hd15iqr": max(data), "ops": 1 / median, "total": sum(data), "data": data, "iterations": 1}}
    payload = {"machine_info": {"node": node, "processor": "x86_64", "machine": "x86_64",
                                "python_implementation": "CPython", "python_version": "3.11.7",
                                "release": "6.1", "system": "Linux", "cpu": {"brand_raw": "Test CPU", "count": 8}},
               "commit_info": {"id": "abc", "dirty": False}, "benchmarks": [bench],
               "datetime": "2026-11-28T00:00:00", "version": "5.3.1"}
    return write(tmp_path / "bench.json", payload)


def asv_result_file(tmp_path, machine="delta", median=0.05):
    """asv 0.6's results/<machine>/<commit>-<env>.json (version 2) for benchmarks/models.py, with
    the benchmarks.json asv writes beside the machine folders."""
    results_dir = tmp_path / "asv" / "results"
    (results_dir / machine).mkdir(parents=True)
    names = {method: f"models.Models.{method}" for method in ("time_iteration", "track_throughput")}
    write(results_dir / "benchmarks.json",
          {**{name: {"param_names": ["model", "mode", "setup"], "type": method.split("_")[0]}
              for method, name in names.items()}, "version": 2})
    params = [["'speech_cnn'", "'mnist_cnn'"], ["'train'"], ["'cpu'", "'cuda-amp_bf16'"]]
    # Cartesian order: speech_cnn/train/cpu, speech_cnn/train/cuda-amp_bf16, mnist_cnn/...: only the
    # first ran (no GPU; mnist_cnn failed), the others are null as asv stores them.
    samples = [median * f for f in (0.99, 1.0, 1.01)]
    payload = {"commit_hash": "abc123", "env_name": "virtualenv-py3.11", "date": 1764288000000,
               "params": {"machine": machine, "python": "3.11", "cpu": "Test CPU", "num_cpu": "4", "os": "Linux",
                          "ram": "16GB"},
               "python": "3.11", "requirements": {}, "env_vars": {},
               "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                                  "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                                  "samples", "profile"],
               "results": {
                   names["time_iteration"]: [
                       [median, None, None, None], params, "hash", 0, 1.0,
                       [median * 0.9, None, None, None], [median * 1.1, None, None, None],
                       [median * 0.99, None, None, None], [median * 1.01, None, None, None],
                       [1, None, None, None], [3, None, None, None], [samples, None, None, None]],
                   names["track_throughput"]: [[100 / median, None, None, None], params, "hash", 0, 1.0]},
               "durations": {}, "version": 2}
    return write(results_dir / machine / "abc123-virtualenv-py3.11.json", payload)


def test_pytest_benchmark_json_is_recognised_by_its_keys(tmp_path):
    loaded = sources.load_any(pytest_benchmark_file(tmp_path))
    assert loaded.format == "pytest-benchmark" and loaded.machine_name == "gamma"
    (row,) = loaded.timings
    assert row["model"] == "speech_cnn" and row["mode"] == "train" and row["median_s"] == 0.02
    assert len(row["samples"]) == 5


def test_asv_results_are_recognised_and_failed_combinations_are_not_zeros(tmp_path):
    loaded = sources.load_any(asv_result_file(tmp_path))
    assert loaded.format == "asv" and loaded.machine_name == "delta"
    (row,) = loaded.timings  # null results (failed, skipped) are no rows; track_ values join the timing's row
    assert (row["model"], row["mode"], row["setup"], row["device"]) == ("speech_cnn", "train", "cpu", "cpu")
    assert row["median_s"] == 0.05 and row["iqr_s"] == pytest.approx(0.05 * 0.02) and len(row["samples"]) == 3
    assert row["throughput"] == pytest.approx(2000) and row["batch_size"] == 100  # the registry's CPU batch


def test_all_three_formats_merge_into_one_comparison(real_run, tmp_path):
    out = tmp_path / "report"
    build_report([real_run, pytest_benchmark_file(tmp_path), asv_result_file(tmp_path)], out_dir=out)
    table = read_comparison(out)
    assert {"alpha", "gamma", "delta"} <= set(table["machine"])
    shared = table[(table["model"] == "speech_cnn") & (table["mode"] == "train") & (table["setup"] == "cpu")
                   & (table["threads_setting"] == "all")]
    assert set(shared["machine"]) == {"alpha", "gamma", "delta"} and not shared["missing"].any()
    assert shared["speedup"].notna().all()  # the three formats line up on the same row
    with open(out / "comparison.csv") as f:
        assert "speedup_ci_low" in next(csv.reader(f))


def test_scaling_efficiency_divides_by_world_size_times_the_single_device_figure():
    from suite.report.tables import scaling

    def row(setup, world_size, throughput, device="cuda", threads=16):
        return {"machine": "gpu box", "model": "mnist_cnn", "mode": "train", "device": device, "setup": setup,
                "world_size": world_size, "batch_size": 1024, "dtype": "float32", "channels_last": False,
                "threads": threads, "throughput": throughput, "noisy": False}

    table = pd.DataFrame([row("cuda", 1, 1000.0), row("cuda-ddp", 2, 1800.0), row("dataparallel", 4, 2000.0),
                          row("cpu", 1, 100.0, "cpu", threads=1), row("cpu", 1, 150.0, "cpu", threads=2),
                          row("cpu-ddp", 2, 160.0, "cpu", threads=1)])
    table["world_size"] = table["world_size"].astype("Int64")
    table["batch_size"] = table["batch_size"].astype("Int64")
    efficiency = scaling(table).set_index("setup")["efficiency"]
    assert efficiency["cuda-ddp"] == pytest.approx(0.9)
    assert efficiency["dataparallel"] == pytest.approx(0.5)
    assert efficiency["cpu-ddp"] == pytest.approx(0.8)  # against 1 thread, the threads each rank had


def test_an_output_path_that_is_a_file_is_a_one_line_error(real_run, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    assert main(["report", str(real_run), "--out", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert target.read_text() == "not a directory"


# --- the interval of every figure, from small synthetic results files -----------------------

def synthetic_timing(model, median, interval=None, batch=100, flags=()):
    """A torchsuite timing record with only what the report reads; interval: (ci95_low_s, ci95_high_s)."""
    low, high = interval or (None, None)
    return {"kind": "timing", "model": model, "mode": "train", "device": "cpu", "setup": "cpu", "world_size": 1,
            "batch_size": batch, "global_batch_size": batch, "threads": 2, "dtype": "float32",
            "channels_last": False, "median_s": median, "iqr_s": median * 0.02, "ci95_low_s": low,
            "ci95_high_s": high, "flags": list(flags), "samples": [median * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)],
            "throughput": batch / median, "quick": False, "torch": "2.11.0"}


def synthetic_results(path, machine, timings):
    return write(path, {"format": results.FORMAT, "schema_version": results.SCHEMA_VERSION, "status": "complete",
                        "machine": {"name": machine, "cores": 2}, "run": {}, "peaks": [], "records": timings})


@pytest.fixture
def interval_report(tmp_path):
    """alpha (baseline) and beta: mnist_cnn twice as fast, clearly; speech_cnn 1% faster, within noise;
    lenet without an interval on beta."""
    alpha = synthetic_results(tmp_path / "alpha.json", "alpha", [
        synthetic_timing("mnist_cnn", 0.010, (0.0099, 0.0101)), synthetic_timing("speech_cnn", 0.020, (0.0198, 0.0202)),
        synthetic_timing("lenet", 0.004, (0.0039, 0.0041))])
    beta = synthetic_results(tmp_path / "beta.json", "beta", [
        synthetic_timing("mnist_cnn", 0.005, (0.00495, 0.00505)),
        synthetic_timing("speech_cnn", 0.0198, (0.0195, 0.0203)), synthetic_timing("lenet", 0.002)])
    return [alpha, beta, pytest_benchmark_file(tmp_path, median=0.018)]


def _cells(markdown: str, section: str) -> dict:
    """{(row, machine): cell} of one pivot section of report.md."""
    lines = [line for line in markdown.split(f"## {section}")[1].split("\n## ")[0].splitlines()
             if line.startswith("|")]
    header, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {(row[0], machine): cell for row in rows[1:] for machine, cell in zip(header[1:], row[1:])}


def test_a_speedup_whose_interval_contains_one_is_marked_within_noise(interval_report, tmp_path):
    out = tmp_path / "report"
    build_report(interval_report, out_dir=out, baseline="alpha")
    table = read_comparison(out).set_index(["machine", "model"])
    clear, close = table.loc[("beta", "mnist_cnn")], table.loc[("beta", "speech_cnn")]
    # ratio bounds: the baseline's fast end over beta's slow end, the baseline's slow end over beta's fast end
    assert (clear["speedup_ci_low"], clear["speedup_ci_high"]) == pytest.approx((0.0099 / 0.00505, 0.0101 / 0.00495))
    assert not clear["speedup_within_noise"] and close["speedup_within_noise"]
    for unknown in (("beta", "lenet"), ("gamma", "speech_cnn"), ("alpha", "mnist_cnn")):
        assert pd.isna(table.loc[unknown, "speedup_ci_low"]) and pd.isna(table.loc[unknown, "speedup_within_noise"])
    speedups = _cells((out / "report.md").read_text(), "Speedup against alpha")
    assert speedups[("mnist_cnn train cpu", "beta")] == "2 [1.96–2.04]"
    assert speedups[("speech_cnn train cpu", "beta")] == "1.01 [0.975–1.04] within noise"
    assert speedups[("lenet train cpu", "beta")] == "2"  # no interval recorded: no brackets and no verdict
    assert speedups[("speech_cnn train cpu", "gamma")] == "1.11"
    assert "within noise" in (out / "report.html").read_text()


def test_tables_show_each_figures_interval_and_none_where_the_record_has_none(interval_report, tmp_path):
    out = tmp_path / "report"
    build_report(interval_report, out_dir=out, baseline="alpha")
    markdown = (out / "report.md").read_text()
    throughput, median = _cells(markdown, "Throughput"), _cells(markdown, "Median time per iteration")
    # throughput = global batch / median: its interval runs from batch / ci95_high_s to batch / ci95_low_s
    assert throughput[("mnist_cnn train cpu", "alpha")] == "10,000 [9,901–10,101]"
    assert median[("mnist_cnn train cpu", "alpha")] == "0.01 [0.0099–0.0101]"
    assert throughput[("lenet train cpu", "beta")] == "50,000" and median[("lenet train cpu", "beta")] == "0.002"
    assert median[("speech_cnn train cpu", "gamma")] == "0.018"  # pytest-benchmark records no interval
    table = read_comparison(out).set_index(["machine", "model"])
    assert table.loc[("alpha", "mnist_cnn"), "throughput_ci_low"] == pytest.approx(100 / 0.0101)
    measured = table[~table["missing"]]
    assert measured[["throughput_ci_low", "throughput_ci_high"]].isna().sum().tolist() == [2, 2]  # beta lenet, gamma


@pytest.mark.draws_plots
def test_plots_draw_a_whisker_for_every_interval_and_none_without(interval_report, tmp_path, monkeypatch):
    from matplotlib.container import ErrorbarContainer

    from suite.report import plots

    figures, save = {}, plots._save

    def keep(fig, path):
        figures[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    build_report(interval_report, out_dir=tmp_path / "report", baseline="alpha")

    def whiskers(name):
        (ax,) = figures[name].axes
        return sorted(tuple(round(y, 4) for y in segment[:, 1]) for c in ax.containers
                      if isinstance(c, ErrorbarContainer) for segment in c.lines[2][0].get_segments())

    # five figures with an interval (alpha's three, beta's mnist_cnn and speech_cnn); beta's lenet and gamma none
    assert whiskers("throughput.png") == sorted(
        (round(100 / high, 4), round(100 / low, 4)) for low, high in
        [(0.0099, 0.0101), (0.0198, 0.0202), (0.0039, 0.0041), (0.00495, 0.00505), (0.0195, 0.0203)])
    # only beta's speedups, against alpha: the within-noise one crosses 1.0
    assert whiskers("speedup.png") == [(round(0.0198 / 0.0203, 4), round(0.0202 / 0.0195, 4)),
                                       (round(0.0099 / 0.00505, 4), round(0.0101 / 0.00495, 4))]


def with_gemm_limit(data: dict, fraction: float) -> tuple[dict, dict]:
    """The run with a measured float32 GEMM limit at which its first CPU figure runs at `fraction`,
    and that figure."""
    out = copy.deepcopy(data)
    first = next(r for r in out["records"] if r["kind"] == "timing" and r["setup"] == "cpu")
    out["records"].append({"kind": "limit", "limit": "gemm", "device": "cpu", "variant": "float32",
                           "unit": "GFLOP/s", "value": first["achieved_flops_per_s"] / fraction / 1e9,
                           "threads": first["threads"], "median_s": 1e-3, "flags": [], "samples": [1e-3] * 5})
    return out, first


@pytest.mark.parametrize("fraction", [0.5, 2.0])
def test_mfu_is_the_figure_over_the_gemm_limit_and_above_it_is_flagged(real_run, tmp_path, fraction):
    data, figure = with_gemm_limit(results.load(real_run), fraction)
    build_report([write(tmp_path / "a.json", data)], out_dir=tmp_path / "out")
    rows = read_comparison(tmp_path / "out")
    same = rows[(rows["setup"] == "cpu") & (rows["mode"] == figure["mode"]) & (rows["threads"] == figure["threads"])]
    (first,) = [row for _, row in same.iterrows()]
    assert first["mfu"] == pytest.approx(fraction)
    assert ("above_gemm_limit" in str(first["flags"])) == (fraction > 1)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Model FLOP/s utilisation (MFU)" in markdown


def test_a_language_models_tokens_per_second_get_their_own_table(real_run, tmp_path):
    data = results.load(real_run)
    for record in data["records"]:
        if record["kind"] == "timing":
            record["tokens_per_s"] = record["throughput"] * 7
    build_report([write(tmp_path / "a.json", data)], out_dir=tmp_path / "out")
    assert "## Language models (tokens/s)" in (tmp_path / "out" / "report.md").read_text()
    assert "## Language models" not in (real_run.parent.parent / "results-report" / "report.md").read_text()


def test_serving_figures_show_their_latency_percentiles_in_milliseconds(real_run, tmp_path):
    data = results.load(real_run)
    served = next(r for r in data["records"] if r["kind"] == "timing" and r["mode"] == "eval")
    data["records"].append({**served, "mode": "serve", "batch_size": 1, "latency_p50_s": 0.002,
                            "latency_p90_s": 0.003, "latency_p99_s": 0.0125})
    build_report([write(tmp_path / "a.json", data)], out_dir=tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    section = markdown[markdown.index("## Serving latency at batch 1"):]
    assert "2 / 3 / 12.5" in section.split("\n## ")[0]
