"""The results file: one JSON object per run, rewritten atomically as records arrive.

A crash or Ctrl-C at any moment leaves either the previous complete file or the new one,
never a torn write: each rewrite goes to a temp file in the same directory, then os.replace
swaps it in (a rename is atomic within one filesystem). JSON only, never pickle: a results
file from an untrusted machine must be safe to load.

Layout (schema_version 2; files of version 1 are read and upgraded, see `upgrade`):

    {"format": "torchsuite-results", "schema_version": 2, "suite_version": "0.1.0",
     "started_at": "...Z", "finished_at": "...Z" | null,
     "status": "running" | "complete" | "interrupted" | "failed",
     "machine": {...suite.environment.capture()...},
     "run": {"devices": [...], "models": [...], "quick": bool, "verdict_sources": [...],
             "machine_state": {"start": {...}, "end": {...}}},
     "peaks": [{"device", "dtype", "flops_per_s", "flags", ...}],
     "records": [timing records (kind="timing") and verdicts (kind="conformance")]}
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable

from suite.errors import SuiteError

SCHEMA_VERSION = 2
# Version 2 said one idea one way: a convergence run's "precision" ("fp32", "bf16") became
# "dtype" ("float32", "bfloat16"), the timings' own names; a compile verdict's "expected"
# ("equivalent", "divergent") became the expected outcome ("passes", "fails").
_V1_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
_V1_EXPECTED = {"equivalent": "passes", "divergent": "fails"}
FORMAT = "torchsuite-results"


class ResultsFileError(SuiteError):
    """A file that is missing, unreadable, truncated or not a torchsuite results file."""


class FutureSchemaError(ResultsFileError):
    """Written by a newer torchsuite than this one; guessing at its meaning would mislead."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_ready(value):
    """Plain JSON values: NaN/inf become null (JSON has no NaN); numpy/torch scalars their Python value."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy or torch scalar
        return json_ready(value.item())
    if hasattr(value, "tolist"):  # arrays and tensors of raw samples
        return json_ready(value.tolist())
    return str(value)  # torch.dtype, torch.device, Path: their names are what a reader needs


def write_json_atomically(path: Path, payload: dict) -> None:
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(json_ready(payload), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():  # only when the write or the rename failed
            temp.unlink()


def _safe_file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "machine"


def create_unique_file(directory: Path, machine_name: str, payload: dict) -> Path:
    """A new file named machine + UTC time + pid, created exclusively (concurrent runs never
    share one) with `payload` already in it: the file is valid JSON from the moment it exists."""
    directory = Path(directory)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{_safe_file_stem(machine_name)}-{stamp}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            path = directory / (f"{stem}.json" if attempt == 0 else f"{stem}-{attempt}.json")
            try:
                with open(path, "x", encoding="utf-8") as f:
                    json.dump(json_ready(payload), f, indent=1, allow_nan=False)
                return path
            except FileExistsError:
                continue
    except OSError as err:  # read-only disk, a file where the directory should be: the user's to fix
        raise ResultsFileError(f"cannot create a results file in {directory}: {err}") from None
    raise ResultsFileError(f"cannot create a unique results file in {directory}")


# Within ResultsStore.batched(), the file is rewritten at most this often.
BATCH_SAVE_EVERY_S = 1.0


class ResultsStore:
    """One run's results file, kept complete on disk after every added record (within
    `batched()`, at most a second behind it)."""

    def __init__(self, directory, machine: dict, run: dict | None = None):
        from suite import __version__

        self.data = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "suite_version": __version__,
            "started_at": utc_now(),
            "finished_at": None,
            "status": "running",
            "machine": machine,
            "run": run or {},
            "peaks": [],
            "records": [],
        }
        self.path = create_unique_file(directory, machine["name"], self.data)
        self._by_figure: dict[str, int] = {}  # a timing figure's index in the records
        self._save_every_s: float | None = None
        self._unsaved, self._saved_at = False, time.monotonic()

    @property
    def records(self) -> list[dict]:
        return self.data["records"]

    def save(self) -> None:
        write_json_atomically(self.path, self.data)
        self._unsaved, self._saved_at = False, time.monotonic()

    @contextlib.contextmanager
    def batched(self, every_s: float = BATCH_SAVE_EVERY_S):
        """Within it, add() rewrites the file at most once every `every_s` seconds, and leaving it
        saves the rest. Each save rewrites the whole file: a step that yields thousands of records
        (the op_db sweep's 2,434) took 107 s of saves alone when every record was one. A kill
        inside it loses at most the records added since the last save."""
        self._save_every_s = every_s
        try:
            yield self
        finally:
            self._save_every_s = None
            if self._unsaved:
                self.save()

    def add_peak(self, peak: dict) -> None:
        self.data["peaks"].append(peak)
        self.save()

    def add(self, record: dict) -> None:
        """Append `record`; one with the `figure` of an earlier record replaces it (a timing
        figure gains a process each round of the run, suite.timing.processes)."""
        figure = record.get("figure")
        if figure is not None and figure in self._by_figure:
            self.records[self._by_figure[figure]] = record
        else:
            if figure is not None:
                self._by_figure[figure] = len(self.records)
            self.records.append(record)
        self._unsaved = True
        if self._save_every_s is None or time.monotonic() - self._saved_at >= self._save_every_s:
            self.save()

    def finish(self, status: str = "complete") -> None:
        self.data["status"] = status
        self.data["finished_at"] = utc_now()
        self.save()

    @contextlib.contextmanager
    def recording(self, say: Callable[[str], object]):
        """Marks the file "interrupted" on Ctrl-C (and `say`s where the finished records are) or
        "failed" on any other exception, then lets it go on; its records stay either way."""
        try:
            yield self
        except KeyboardInterrupt:
            self.finish("interrupted")
            say(f"interrupted; finished records kept in {self.path}")
            raise
        except BaseException:
            self.finish("failed")
            raise


def validate(data, source: str = "results") -> dict:
    """The parsed results object, or a ResultsFileError naming what is wrong with it."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or "schema_version" not in data:
        raise ResultsFileError(f"{source}: not a torchsuite results file")
    version = data["schema_version"]
    if not isinstance(version, int):
        raise ResultsFileError(f"{source}: schema_version {version!r} is not an integer")
    if version > SCHEMA_VERSION:
        raise FutureSchemaError(
            f"{source}: schema version {version} is newer than this torchsuite understands "
            f"({SCHEMA_VERSION}); upgrade torchsuite to read it")
    machine = data.get("machine")
    if not isinstance(machine, dict) or not machine.get("name"):
        raise ResultsFileError(f"{source}: no machine name")
    if not isinstance(data.get("records"), list):
        raise ResultsFileError(f"{source}: no records list")
    return upgrade(data)


def _v1_dtype(holder: dict) -> None:
    if "precision" in holder:
        precision = holder.pop("precision")
        holder["dtype"] = _V1_DTYPES.get(precision, precision)


def upgrade(data: dict) -> dict:
    """A results object of an older schema, in this one's names (changed in place)."""
    if data["schema_version"] < 2:
        if isinstance(data.get("run"), dict) and data["run"].get("command") == "converge":
            _v1_dtype(data["run"])
        for record in data["records"]:
            if not isinstance(record, dict):
                continue
            if record.get("kind") == "convergence":
                _v1_dtype(record)
            if record.get("kind") == "conformance" and record.get("expected") in _V1_EXPECTED:
                record["expected"] = _V1_EXPECTED[record["expected"]]
        data["schema_version"] = 2
    return data


def read_json(path) -> object:
    return parse_json(read_text(path), path)


def read_text(path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsFileError(f"{path}: cannot read: {err}") from None


def parse_json(text: str, source) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultsFileError(f"{source}: not valid JSON (truncated?): {err}") from None


def load(path) -> dict:
    """A torchsuite results file, validated."""
    return validate(read_json(path), str(path))
