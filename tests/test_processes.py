"""Figures from several fresh processes: the interval's calibration, the merge, and workers that fail."""
import json
import math
import os
import random
import statistics
import sys

import pytest

from suite.timing import processes
from suite.timing.processes import (Interpreter, WorkerError, WorkerProcess, merge_figures, merge_processes,
                                    round_order)
from suite.timing.stats import between_process_interval, figure_log_sd, typical_log_variance


def process_record(median_s: float, *, setup="cpu", flags=("quick",), samples=6) -> dict:
    """One process's record as time_model gives it, reduced to what the merge reads."""
    return {"kind": "timing", "device": "cpu", "setup": setup, "median_s": median_s, "quick": True,
            "samples": [median_s] * samples, "iqr_s": median_s * 0.02, "flags": list(flags), "canary_before_s": 0.004,
            "canary_after_s": 0.004, "peak_mem_bytes": 1, "throughput": 100 / median_s,
            "achieved_flops_per_s": 1e9 / median_s, "peak_fraction": 0.1 * 0.01 / median_s}


def simulated_run(rng: random.Random, figures: int, count: int, sd: float) -> list[list[float]]:
    """Process medians of one run of `count` rounds: the machine's moment in each round moves every
    figure of the round alike (sd `sd`), and each process adds a little of its own (sd / 3)."""
    moments = [rng.gauss(0, sd) for _ in range(count)]
    return [[math.exp(moment + rng.gauss(0, sd / 3)) for moment in moments] for _ in range(figures)]


@pytest.mark.parametrize("count", [3, 4])
def test_the_interval_holds_a_reruns_median_as_often_as_a_calibrated_one_does(count):
    # A calibrated 95% t interval holds another run's mean with probability P(|T| < t_.975 / sqrt 2),
    # T with the interval's degrees of freedom: 91% at 2, 87% at 3, 83% with many (the other run's
    # mean has noise of its own). A figure's own spread where it is larger than the run's typical
    # one makes it a little wider. Too narrow (degrees of freedom pooled over figures that share
    # each round's moment) and too wide both fail.
    from scipy.stats import t
    rng = random.Random(0)
    held = total = 0
    for _ in range(400):
        first, second = simulated_run(rng, 6, count, 0.03), simulated_run(rng, 6, count, 0.03)
        typical = typical_log_variance(first)
        for mine, theirs in zip(first, second):
            low, high = between_process_interval(mine, figure_log_sd(mine, typical), count - 1)
            total += 1
            held += low <= statistics.median(theirs) <= high
    df = count - 1
    expected = 2 * t.cdf(t.ppf(0.975, df) / math.sqrt(2), df) - 1
    assert expected - 0.03 < held / total < min(0.97, expected + 0.06), (held / total, expected)


def test_a_figure_of_several_processes_is_their_median_with_their_flags_and_samples():
    records = [process_record(0.010), process_record(0.0105, flags=("quick", "contended"))]
    merged = merge_processes(records, 0.05)
    assert merged["median_s"] == pytest.approx(0.01025) and merged["throughput"] == pytest.approx(100 / 0.01025)
    assert merged["flags"] == ["contended", "quick"] and len(merged["samples"]) == 12
    assert [p["median_s"] for p in merged["processes"]] == [0.010, 0.0105]
    assert merged["ci95_low_s"] < merged["median_s"] < merged["ci95_high_s"]
    assert merged["interval_method"] == "between_processes" and merged["process_log_sd"] == 0.05
    alone = merge_processes([process_record(0.010)], None)
    assert "one_process" in alone["flags"] and alone["ci95_low_s"] is None


def test_one_figures_wild_process_widens_its_own_interval_not_every_figures():
    calm = {f"f{i}": [process_record(0.010), process_record(0.0101), process_record(0.0099)] for i in range(5)}
    wild = {**calm, "wild": [process_record(0.010), process_record(0.016), process_record(0.0099)]}
    merged, before = merge_figures(wild), merge_figures(calm)
    assert merged["f0"]["process_log_sd"] < 1.5 * before["f0"]["process_log_sd"]
    assert merged["wild"]["ci_half_width_fraction"] > 10 * merged["f0"]["ci_half_width_fraction"]


def test_a_disturbed_process_does_not_widen_every_figures_interval():
    calm = {f"f{i}": [process_record(0.010), process_record(0.0101)] for i in range(3)}
    disturbed = {**calm, "bad": [process_record(0.010), process_record(0.020, flags=("contended",))]}
    assert merge_figures(disturbed)["f0"]["process_log_sd"] == pytest.approx(merge_figures(calm)["f0"]["process_log_sd"])
    # DDP figures pool among themselves: their ranks vary more than one process does
    ddp = {**calm, "ddp": [process_record(0.02, setup="cpu-ddp"), process_record(0.03, setup="cpu-ddp")]}
    merged = merge_figures(ddp)
    assert merged["ddp"]["process_log_sd"] > 10 * merged["f0"]["process_log_sd"]


def test_rounds_keep_a_pools_figures_together_and_alternate_direction():
    requests = [{"figure": name, "kwargs": {"setup": setup, "world_size": ws}}
                for name, setup, ws in [("a", "cpu", None), ("b", "cpu-ddp", 2), ("c", "cpu", None), ("d", "cpu-ddp", 2)]]
    first, second = round_order(requests, 0), round_order(requests, 1)
    assert [r["figure"] for r in first] == ["a", "c", "b", "d"] and second == first[::-1]


QUICK_EVAL = {"setup": "cpu", "quick": True, "min_run_time": 0.05}


def test_a_held_worker_times_its_figures_in_a_fresh_process_once_released_and_a_broken_one_is_an_answer(tmp_path):
    # held, as ab's are; `torchsuite run`'s unheld workers are timed end to end by tests/test_run.py
    requests = [{"figure": "unknown", "model": "no_such_model", "mode": "eval", "kwargs": QUICK_EVAL},
                {"figure": "speech", "model": "speech_cnn", "mode": "eval", "kwargs": QUICK_EVAL}]
    from suite.isolation import IMPORT_ENV
    from suite.threads import usable_cores
    from suite.timing.worker import PEAKS_ENV

    given = {"device": "cpu", "dtype": "float32", "threads": usable_cores(), "flops_per_s": 1.5e11}
    (tmp_path / "backend_plugin.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    env = {PEAKS_ENV: json.dumps({"quick": True, "peaks": [given]}), IMPORT_ENV: "backend_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    worker = WorkerProcess(requests, held=True, env=env)
    try:
        worker.ready()
        assert worker.failure is None and not worker.answers and worker.proc.poll() is None  # waits for its requests
        assert (tmp_path / "imported").exists()  # TORCHSUITE_IMPORT's modules come in before it is ready
        worker.release()
        with pytest.raises(WorkerError, match="no_such_model"):
            worker.result(0)
        record = worker.result(1)
    finally:
        worker.close()
    assert record["model"] == "speech_cnn" and record["median_s"] > 0 and "one_process" in record["flags"]
    assert record["peak_calibration"]["flops_per_s"] == 1.5e11  # the given one: no calibration of its own


def fake_python(tmp_path, body: str) -> str:
    """An 'interpreter' that runs `body` as a shell script instead of the worker."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_worker_that_dies_is_a_one_line_error_for_what_it_had_not_answered(tmp_path):
    python = fake_python(tmp_path, "echo 'Fatal Python error: simulated' >&2; exit 3")
    worker = WorkerProcess([{"figure": "a", "kwargs": {}}], Interpreter(python=python))
    with pytest.raises(WorkerError, match="died of exit status 3 before answering: Fatal Python error: simulated") as lost:
        worker.result(0)
    assert lost.value.outcome == "crash" and lost.value.stderr_tail == "Fatal Python error: simulated"


def test_a_worker_that_hangs_is_killed_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "figure_timeout_s", lambda kwargs: 1.0)
    pid_file = tmp_path / "child.pid"
    python = fake_python(tmp_path, f"sleep 300 & echo $! > {pid_file}; wait")
    worker = WorkerProcess([{"figure": "a", "kwargs": {}}], Interpreter(python=python))
    with pytest.raises(WorkerError, match="timed out after 1 s") as lost:
        worker.result(0)
    assert lost.value.outcome == "timeout"
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # its whole process group went with it
        for _ in range(50):
            os.kill(child, 0)
            __import__("time").sleep(0.1)


@pytest.mark.parametrize("body, error", [
    ("echo 'Fatal Python error: simulated' >&2; exit 3", "died of exit status 3 before answering"),
    ("echo 'torch 0.1 says hello'; cat > /dev/null", "wrote 'torch 0.1 says hello' instead of saying it was ready"),
])
def test_a_held_worker_lost_before_it_is_ready_fails_every_request_with_a_one_line_error(tmp_path, body, error):
    worker = WorkerProcess([{"figure": "a", "kwargs": {}}, {"figure": "b", "kwargs": {}}],
                           Interpreter(python=fake_python(tmp_path, body)), held=True)
    worker.ready()
    worker.release()  # nothing to hand it to: no error here, the requests say it
    for index in (0, 1):
        with pytest.raises(WorkerError, match=error):
            worker.result(index)


def test_a_held_worker_that_never_gets_ready_is_killed_at_its_limit(tmp_path):
    worker = WorkerProcess([{"figure": "a", "kwargs": {}}], Interpreter(python=fake_python(tmp_path, "sleep 300")),
                           held=True)
    worker.ready(timeout_s=1.0)
    assert worker.proc.poll() is not None
    with pytest.raises(WorkerError, match="timed out after 1 s while importing torch") as lost:
        worker.result(0)
    assert lost.value.outcome == "timeout"


def test_an_ab_rounds_workers_import_side_by_side_then_time_one_at_a_time_later_ones_with_the_sides_peak(tmp_path):
    from suite.ab import time_interleaved

    log = tmp_path / "log"
    calibration = '{"device": "cpu", "dtype": "float32", "threads": 1, "flops_per_s": 1e11}'

    def build(name: str) -> Interpreter:
        (tmp_path / name).mkdir()
        return Interpreter(python=fake_python(tmp_path / name, f"""
echo "ready {name} ${{TORCHSUITE_PEAKS:+seeded}}" >> {log}
echo '{{"ready": true}}'
cat > /dev/null
echo "start {name}" >> {log}
sleep 0.2
echo "end {name}" >> {log}
echo '{{"index": 0, "record": {{"median_s": 0.01, "quick": true, "peak_calibration": {calibration}}}}}'"""), label=name)

    collected = time_interleaved(build("base"), build("new"), [{"figure": "f", "kwargs": {}}], 2)
    assert [len(collected[side]["f"]) for side in ("base", "new")] == [2, 2]
    lines = log.read_text().split("\n")
    first, second = lines[:6], lines[6:12]
    assert sorted(first[:2]) == ["ready base ", "ready new "]  # both import before either times anything
    assert first[2:] == ["start base", "end base", "start new", "end new"]  # then one at a time, A B
    assert sorted(second[:2]) == ["ready base seeded", "ready new seeded"]  # each side's first calibration
    assert second[2:] == ["start new", "end new", "start base", "end base"]  # B A


def test_a_sides_peak_is_seeded_only_from_records_that_carry_one():
    from suite.ab import seeded_peaks
    from suite.timing.worker import PEAKS_ENV

    peak = {"device": "cpu", "dtype": "float32", "threads": 1}
    assert seeded_peaks([[{"median_s": 1.0}], []]) == {}  # a user's function: no calibration to pass on
    env = seeded_peaks([[{"quick": True, "peak_calibration": peak}] * 2, [{"quick": True, "peak_calibration": peak}]])
    assert json.loads(env[PEAKS_ENV]) == {"quick": True, "peaks": [peak]}


def test_an_interpreter_that_does_not_exist_is_a_one_line_error():
    with pytest.raises(WorkerError, match="cannot start"):
        WorkerProcess([], Interpreter(python=os.path.join(sys.prefix, "no-such-python")))


def test_a_figure_faster_than_the_calibrated_peak_is_flagged_on_its_merged_fraction():
    # peak_fraction 0.001 / median_s: 0.95 at 1.053 ms, 1.05 at 0.952 ms; the merge takes the median process
    below = merge_processes([process_record(0.00108), process_record(0.00105), process_record(0.00090)], 0.05)
    above = merge_processes([process_record(0.00098), process_record(0.00094), process_record(0.00120)], 0.05)
    assert below["peak_fraction"] < 1 and "above_peak" not in below["flags"]
    assert above["peak_fraction"] > 1 and "above_peak" in above["flags"]


def test_a_worker_takes_the_runs_calibration_instead_of_measuring_its_own(monkeypatch):
    from suite.timing import peak
    from suite.timing.worker import PEAKS_ENV, seed_peaks

    given = {"kind": "peak", "device": "cpu", "dtype": "float32", "threads": 3, "flops_per_s": 1.5e11}
    monkeypatch.setenv(PEAKS_ENV, json.dumps({"quick": True, "peaks": [given]}))
    monkeypatch.setattr(peak, "_CACHE", {})
    seed_peaks()
    assert peak.calibrate_peak("cpu", "float32", threads=3, quick=True)["flops_per_s"] == 1.5e11


def test_a_runs_processes_sample_a_fixed_amount_and_only_the_first_times_a_compile():
    from dataclasses import replace

    from suite.runner import default_timing_api, make_plan

    opened = []

    class Unanswering:
        def __init__(self, requests):
            opened.append(requests)

        def result(self, index):
            raise WorkerError("not timed in this test")

        def close(self):
            pass

    api = replace(default_timing_api(), open_worker=Unanswering, processes=lambda quick: 3, measure_limit=None)
    _, _, steps = make_plan(device_request="cpu", model_names=["speech_cnn"], quick=False, verdict_sources=[],
                            timing=api, limit_names=[])
    for step in steps:
        if step.kind == "timing" and "(process" in step.label:
            with pytest.raises(WorkerError):
                list(step.produce())
    assert len(opened) == 3
    assert all(r["kwargs"]["seek_precision"] is False for requests in opened for r in requests)
    compiled = [[r["kwargs"].get("measure_compile", True) for r in requests if r["kwargs"]["setup"] == "cpu-compile"]
                for requests in opened]
    assert compiled == [[True, True], [False, False], [False, False]]


def test_one_of_several_processes_stops_at_the_minimum_count_not_a_precision_target(monkeypatch):
    from suite.timing import peak
    from suite.timing.core import time_model

    # The stop rules are under test, not the full rules' calibration (a 2048 matmul sampled to 2%,
    # seconds): it takes the quick one's figure.
    monkeypatch.setattr(peak, "_CACHE", dict(peak._CACHE))  # this test's seed goes with it
    peak.seed_cache(peak.calibrate_peak("cpu", quick=True), quick=False)
    # full rules (a lone full figure samples on to 2%: tests/test_timing.py)
    record = time_model("speech_cnn", mode="eval", min_run_time=0.05, seek_precision=False)
    assert not record["quick"] and record["min_samples"] == 10
    assert record["target_precision"] is None and record["stop_reason"] in ("min_samples", "time_cap")
