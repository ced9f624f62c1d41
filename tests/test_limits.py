"""The machine's limits: the registry, the records the timing core gives, the run's step, the report's table."""
import io
import math
from dataclasses import replace

import pytest

from suite import results
from suite.cases.limits import CASES
from suite.cli import main
from suite.errors import UnknownCaseError
from suite.runner import TimingApi, make_plan, run_suite
from suite.timing import limits
from suite.timing.figure import FLAGS
from suite.timing.options import sampling_rules

# Tiny sizes: the records' shape and arithmetic are under test here, not the machine.
TINY = {"gemm": (64,), "memory_bandwidth": (1 << 20,), "launch_latency": (1,)}


def test_every_limit_declares_devices_unit_sizes_and_variants():
    assert set(CASES.names()) == {"gemm", "memory_bandwidth", "launch_latency", "host_device_copy", "collectives"}
    for spec in CASES:
        assert spec.devices and spec.unit and spec.sizes and spec.quick_sizes and spec.variants_for("cpu")
    assert CASES.get("gemm").variants_for("cpu") == ("float32", "bfloat16")
    assert {"tfloat32", "float16"} <= set(CASES.get("gemm").variants_for("cuda"))


def test_an_unknown_limit_is_one_line(capsys):
    with pytest.raises(UnknownCaseError, match="unknown limit 'gemmm'; valid: "):
        list(limits.measure_limit("gemmm"))
    assert main(["run", "--device", "cpu", "--quick", "--dry-run", "--limits", "gemm,gemmm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown limit 'gemmm'" in err


def test_busbw_follows_nccl_tests_formulas():
    assert limits.bus_bandwidth("all_reduce", 10.0, 2) == 10.0  # 2(n-1)/n
    assert limits.bus_bandwidth("all_reduce", 10.0, 8) == pytest.approx(17.5)
    assert limits.bus_bandwidth("all_gather", 10.0, 4) == pytest.approx(7.5)  # (n-1)/n
    assert limits.bus_bandwidth("reduce_scatter", 10.0, 2) == 5.0
    assert limits.bus_bandwidth("broadcast", 10.0, 8) == 10.0


def check(record: dict, limit: str) -> None:
    limits.check_record(record)  # fields, the registry's unit, a positive finite value
    assert record["kind"] == "limit" and record["limit"] == limit and record["unit"] == CASES.get(limit).unit
    assert set(record["flags"]) <= set(FLAGS) and "quick" in record["flags"]
    assert len(record["samples"]) >= 1 and all(s > 0 for s in record["samples"])
    assert record["median_s"] > 0 and math.isfinite(record["value"])


def short_sampling(quick, min_run_time=None):
    """The core's quick rules, shorter still: one attempt of 0.02 s."""
    return {**sampling_rules(quick, 0.02), "attempts": 1}


def test_cpu_limits_are_timed_by_the_core_with_stream_counting(monkeypatch):
    monkeypatch.setattr(limits, "last_level_cache_bytes", lambda: None)  # no 4x-cache buffers here
    monkeypatch.setattr(limits, "sampling_rules", short_sampling)
    by_name = {}
    for name, sizes in TINY.items():
        spec = CASES.get(name)
        by_name[name] = list(limits._MEASURE[name](replace(spec, quick_sizes=sizes), "cpu", sizes, True))
    gemm = by_name["gemm"]
    assert [r["variant"] for r in gemm] == ["float32", "bfloat16"]
    for r in gemm:
        check(r, "gemm")
        assert r["value"] == pytest.approx(2 * 64 ** 3 / r["median_s"] / 1e9)
        assert r["sweep"][0]["size"] == 64
    copy, triad = by_name["memory_bandwidth"]
    for r, arrays in ((copy, 2), (triad, 3)):
        check(r, "memory_bandwidth")
        assert r["bytes_moved"] == arrays * r["size"] and r["value"] == pytest.approx(r["bytes_moved"] / r["median_s"] / 1e9)
    (launch,) = by_name["launch_latency"]
    check(launch, "launch_latency")
    assert launch["value"] == pytest.approx(launch["median_s"] * 1e6)


def test_gpu_only_limits_are_skipped_with_a_reason_on_cpu():
    (record,) = limits.measure_limit("host_device_copy", "cpu", quick=True)
    assert record["kind"] == "skipped" and "cuda only" in record["reason"]


@pytest.mark.distributed
def test_all_reduce_over_gloo_ranks_gives_algbw_and_busbw():
    spec = replace(CASES.get("collectives"), variants=("all_reduce",))
    (record,) = limits._collectives(spec, "cpu", (8 << 10,), True)
    check(record, "collectives")
    assert record["size"] == 8 << 10 and record["world_size"] == 2
    assert record["algbw"] == pytest.approx(record["size"] / record["median_s"] / 1e9)
    assert record["busbw"] == pytest.approx(record["algbw"] * 2 * (2 - 1) / 2) == record["value"]


def fake_limit(name, device, quick):
    spec = CASES.get(name)
    if device not in spec.devices:
        yield {"kind": "skipped", "stage": "limits", "limit": name, "device": device, "reason": "cuda only"}
        return
    for size in (8 << 10, 4 << 20) if name == "collectives" else (1,):
        yield {"kind": "limit", "limit": name, "device": device, "variant": spec.variants[0], "unit": spec.unit,
               "size": size, "value": 123.4 + size, "median_s": 1e-3, "flags": ["quick", "one_process"],
               "samples": [1e-3] * 5}


NO_TIMINGS = TimingApi(open_worker=None, calibrate=lambda device, quick: {"flops_per_s": 1.0},
                       iter_setups=lambda devices, quick, models: [], measure_limit=fake_limit)


def test_a_run_has_a_limits_step_per_limit_after_the_calibration():
    _, _, steps = make_plan(device_request="cpu", quick=False, verdict_sources=[], timing=NO_TIMINGS)
    assert [s.kind for s in steps[:1 + len(CASES)]] == ["calibration"] + ["limits"] * len(CASES)
    assert [s.context["limit"] for s in steps[1:1 + len(CASES)]] == CASES.names()
    _, _, quick = make_plan(device_request="cpu", quick=True, verdict_sources=[], timing=NO_TIMINGS)
    assert [s.context.get("limit") for s in quick[1:]] == [spec.name for spec in CASES if spec.quick]
    _, _, only = make_plan(device_request="cpu", quick=True, verdict_sources=[], timing=NO_TIMINGS,
                           limit_names=[])
    assert [s.kind for s in only] == ["calibration"]


def test_the_reports_first_screen_shows_the_machine_limits(tmp_path, tables_only):
    path = run_suite(device_request="cpu", quick=True, out_dir=tmp_path / "r", report_dir=tmp_path / "report",
                     verdict_sources=[], timing=NO_TIMINGS, stream=io.StringIO(), limit_names=CASES.names())
    records = results.load(path)["records"]
    assert sum(r["kind"] == "limit" for r in records) == 5 and sum(r["kind"] == "skipped" for r in records) == 1
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert markdown.index("## Summary") < markdown.index("## Machine limits") < markdown.index("## How to read")
    table = markdown[markdown.index("## Machine limits"):markdown.index("## How to read")]
    assert "| gemm " in table and "GFLOP/s" in table and "quick, one_process" in table
    rows = [line for line in table.splitlines() if "| collectives" in line]
    assert len(rows) == 1 and "4 MB" in rows[0]  # collectives at their largest size
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Machine limits</h2>" in html and "memory_bandwidth" in html
