"""Read result files of three formats into one shape, telling the formats apart by their keys.

- torchsuite results (suite/results.py): "format" == "torchsuite-results".
- pytest-benchmark JSON (`--benchmark-json`, `.benchmarks/`): "machine_info" and "benchmarks";
  each benchmark's "stats" holds median/iqr and, with `--benchmark-save-data`, the raw "data".
- asv results (`.asv/results/<machine>/<commit>-<env>.json`): "results", "result_columns",
  "commit_hash"; each row is laid out by "result_columns", values over the Cartesian
  product of "params". Parameter names live in the sibling `benchmarks.json`, when present.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from suite import results
from suite.results import ResultsFileError


@dataclass
class MachineResults:
    machine_name: str
    environment: dict
    source: str
    format: str
    status: str = "complete"
    timings: list[dict] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    crashes: list[dict] = field(default_factory=list)  # steps and figures whose process died or hung (suite.isolation)
    peaks: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    convergence: list[dict] = field(default_factory=list)  # time-to-accuracy runs (suite.convergence)
    limits: list[dict] = field(default_factory=list)  # the machine's limits (suite.timing.limits)
    run: dict = field(default_factory=dict)  # how the file was made (torchsuite's `run` header)
    started_at: str = ""  # when the run began (UTC, ISO 8601), where the file says
    suite_version: str = ""  # the torchsuite that wrote it (torchsuite files)


def _from_torchsuite(data: dict, source: str) -> MachineResults:
    data = results.validate(data, source)
    machine = data["machine"]
    loaded = MachineResults(machine["name"], machine, source, "torchsuite",
                            status=data.get("status", "complete"), peaks=list(data.get("peaks", [])),
                            run=data["run"] if isinstance(data.get("run"), dict) else {},
                            started_at=str(data.get("started_at") or ""), suite_version=str(data.get("suite_version") or ""))
    by_kind = {"timing": loaded.timings, "conformance": loaded.verdicts, "error": loaded.errors,
               "crash": loaded.crashes, "skipped": loaded.skipped, "convergence": loaded.convergence, "limit": loaded.limits}
    for record in data["records"]:
        if isinstance(record, dict) and record.get("kind") in by_kind:
            by_kind[record["kind"]].append(record)
    # Timings divide by the calibration they were measured against (e.g. per-rank threads for DDP),
    # which may not be one of the run's up-front calibrations.
    seen = {_peak_identity(p) for p in loaded.peaks}
    for record in loaded.timings:
        calibration = record.get("peak_calibration")
        if isinstance(calibration, dict) and _peak_identity(calibration) not in seen:
            seen.add(_peak_identity(calibration))
            loaded.peaks.append(calibration)
    return loaded


def _peak_identity(peak: dict) -> tuple:
    return tuple(str(peak.get(k)) for k in ("device", "dtype", "threads", "matmul_size"))


def _benchmark_identity(name: str, params: dict, extra: dict) -> dict:
    """model/mode/device/setup from what the benchmark recorded, its params, or else its name."""
    merged = {**(params or {}), **(extra or {})}
    identity = {"model": merged.get("model") or merged.get("model_name") or name,
                "mode": merged.get("mode", ""), "device": merged.get("device", "cpu")}
    identity["setup"] = merged.get("setup", identity["device"])
    identity["dtype"] = "float32"  # time_model's default, which a variant without a dtype ran in
    for key in ("world_size", "batch_size", "threads", "dtype", "channels_last", "throughput", "peak_mem_bytes",
                "flops", "achieved_flops_per_s", "peak_flops_per_s", "peak_fraction", "tokens_per_s"):
        if key in merged:
            identity[key] = merged[key]
    return identity


def _from_pytest_benchmark(data: dict, source: str) -> MachineResults:
    info = data.get("machine_info") or {}
    cpu = info.get("cpu") or {}
    stack = info.get("torch") or {}  # added by suite.pytest_plugin's machine-info hook
    name = info.get("node") or "pytest-benchmark"
    env = {"name": name, "cpu": cpu.get("brand_raw") or info.get("processor"), "cores": cpu.get("count"),
           "os": f"{info.get('system', '')} {info.get('release', '')}".strip(),
           "python": info.get("python_version"), "torch": stack.get("version"), "cuda": stack.get("cuda"),
           "cudnn": stack.get("cudnn"), "gpus": stack.get("gpus"),
           "source_format": f"pytest-benchmark {data.get('version', '')}"}
    loaded = MachineResults(name, env, source, "pytest-benchmark", started_at=str(data.get("datetime") or ""))
    for bench in data.get("benchmarks") or []:
        stats = bench.get("stats") or {}
        if "median" not in stats:
            continue
        row = _benchmark_identity(bench.get("name", "?"), bench.get("params"), bench.get("extra_info"))
        row.update(median_s=stats["median"], iqr_s=stats.get("iqr"), samples=stats.get("data"))
        loaded.timings.append(row)
    return loaded


def _asv_param_names(path: Path) -> dict:
    # results/<machine>/<file>.json; asv writes results/benchmarks.json with each benchmark's param_names
    catalogue = path.parent.parent / "benchmarks.json"
    try:
        return {k: v.get("param_names", []) for k, v in json.loads(catalogue.read_text()).items()
                if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}


def _asv_value(text):
    # asv stores each parameter value as its repr(): "'mnist_cnn'", "100"
    try:
        import ast

        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# asv track_ benchmarks of benchmarks/models.py whose values belong beside the timing's row
_ASV_TRACKS = {"track_throughput": "throughput", "track_peak_fraction": "peak_fraction",
               "track_peak_mem": "peak_mem_bytes"}


def _asv_combos(fields: dict, param_names: list[str]) -> list[tuple[tuple, dict]]:
    combos = list(itertools.product(*fields.get("params") or [[]]))
    names = param_names or [f"param{i}" for i in range(len(combos[0]) if combos else 0)]
    return [(combo, {n: _asv_value(v) for n, v in zip(names, combo)}) for combo in combos]


def _column(fields: dict, name: str, count: int) -> list:
    return fields.get(name) or [None] * count


def _variant_keywords(decoded: dict) -> dict:
    """benchmarks/models.py names a timing variant ("cuda-amp_bf16"); the registry says what it means.
    Results written before the parameter was called "variant" call it "setup"."""
    variant_id = decoded.get("variant", decoded.get("setup"))
    try:
        from suite.timing.plan import VARIANT_BY_ID
    except ImportError:
        return {}
    variant = VARIANT_BY_ID.get(variant_id)
    return {"device": variant.device, **variant.kwargs} if variant else {}


def _registry_batch_size(model: str, device: str):
    from suite.cases.models import CASES

    return CASES.get(model).batch_size(device) if model in CASES else None


def _from_asv(data: dict, source: str, path: Path) -> MachineResults:
    params = data.get("params") or {}
    name = params.get("machine") or "asv"
    env = {"name": name, "cpu": params.get("cpu"), "cores": params.get("num_cpu"), "os": params.get("os"),
           "memory": params.get("ram"), "python": data.get("python"), "commit": data.get("commit_hash"),
           "source_format": f"asv results v{data.get('version', '?')}"}
    loaded = MachineResults(name, env, source, "asv")
    columns = data.get("result_columns") or []
    names_of = _asv_param_names(path)
    benchmarks = {bench: dict(zip(columns, row)) for bench, row in (data.get("results") or {}).items()}
    tracks = {}
    for bench, fields in benchmarks.items():
        prefix, _, method = bench.rpartition(".")
        if method in _ASV_TRACKS and fields.get("result") is not None:
            for (combo, _), value in zip(_asv_combos(fields, names_of.get(bench)), fields["result"]):
                tracks.setdefault((prefix, combo), {})[_ASV_TRACKS[method]] = value
    for bench, fields in benchmarks.items():
        prefix, _, method = bench.rpartition(".")
        values = fields.get("result")
        if not method.startswith("time_") or values is None:
            continue  # track_/peakmem_ benchmarks are not durations
        count = len(values)
        for (combo, decoded), median, raw, low, high in zip(
                _asv_combos(fields, names_of.get(bench)), values, _column(fields, "samples", count),
                _column(fields, "stats_q_25", count), _column(fields, "stats_q_75", count)):
            if median is None:
                continue  # a failed or skipped combination: shown as missing, never as 0
            label = bench + ("(" + ", ".join(map(str, decoded.values())) + ")" if decoded else "")
            row_out = _benchmark_identity(label, {**decoded, **_variant_keywords(decoded)}, {})
            if "model" not in decoded and "model_name" not in decoded:
                row_out["model"] = label
            row_out.setdefault("batch_size", _registry_batch_size(row_out["model"], row_out["device"]))
            row_out.update({k: v for k, v in tracks.get((prefix, combo), {}).items() if v is not None})
            iqr = high - low if low is not None and high is not None else None
            row_out.update(median_s=median, iqr_s=iqr, samples=raw)
            loaded.timings.append(row_out)
    return loaded


def load_any(path, text: str | None = None) -> MachineResults:
    """The results file at `path` (whose text, when given, is `text`), whatever its format."""
    path = Path(path)
    data = results.read_json(path) if text is None else results.parse_json(text, path)
    if isinstance(data, dict):
        if data.get("format") == results.FORMAT or "schema_version" in data:
            return _from_torchsuite(data, str(path))
        if "machine_info" in data and "benchmarks" in data:
            return _from_pytest_benchmark(data, str(path))
        if {"results", "result_columns", "commit_hash"} <= data.keys():
            return _from_asv(data, str(path), path)
    raise ResultsFileError(f"{path}: not a torchsuite, pytest-benchmark or asv results file")
