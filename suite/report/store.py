"""A results store for a fleet: many machines' results as Parquet tables, one per record kind, for DuckDB.

`torchsuite ingest FILES... --store DIR` derives it from results files of any format the report
reads (suite.report.sources); the JSON files stay the truth. DIR holds:

    torchsuite-store.json   the manifest: format, schema version, and the Parquet parts of each table
    runs/                   one row per ingested file: run_id (its SHA-256), machine, stack, and `results`:
                            a torchsuite file's own text, or another format's as sources read it (JSON
                            text), from which report and compare rebuild the file's results exactly
    timings/ limits/ verdicts/ convergence/ errors/ crashes/ skipped/
                            one row per record of that kind (MachineResults' lists, by the same names): run_id, machine, key (the figure or check, named as the
                            report names it), value and unit (the figure a fleet compares), passed,
                            flags, and the record's own fields that a query selects on

Ingesting a file twice changes nothing: a file is its bytes' SHA-256. Parts are written under fresh
names and the manifest replaced atomically after them, so an ingest that dies half way leaves the
store as it was; parts no manifest names are never read, and the next ingest removes them.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

from suite.cases.limits import CASES as LIMITS
from suite.errors import SuiteError, one_line
from suite.report import machines as machine_tables
from suite.report import sources, tables
from suite.results import ResultsFileError, json_ready, read_text, write_json_atomically
from suite.timing.setups import ONE_DEVICE_SETUPS

MANIFEST = "torchsuite-store.json"
FORMAT = "torchsuite-store"
SCHEMA_VERSION = 1
# Rows a worker holds before it writes a part: bounds its memory (a full run has ~3,300 records).
ROWS_PER_PART = 100_000
RUNS_PER_PART = 50  # a run's row holds its whole file (a full run's is about 1.5 MB)

STR, INT, FLOAT, BOOL = "string", "int64", "double", "bool"
COMMON = {"run_id": STR, "machine": STR, "key": STR, "value": FLOAT, "unit": STR, "passed": BOOL, "flags": STR}
RUNS = {"run_id": STR, "machine": STR, "source": STR, "format": STR, "status": STR, "started_at": STR,
        "torch": STR, "cuda": STR, "gpu_driver": STR, "suite_version": STR, "cpu": STR, "cores": INT, "gpus": STR,
        "quick": BOOL, "records": INT, "results": STR}
# Each record table, named as MachineResults' list of its records: the record's own fields kept as columns,
# beside COMMON.
TABLES = {
    "timings": {"model": STR, "mode": STR, "device": STR, "setup": STR, "dtype": STR, "world_size": INT,
               "batch_size": INT, "threads": INT, "median_s": FLOAT, "ci95_low_s": FLOAT, "ci95_high_s": FLOAT,
               "throughput": FLOAT},
    "limits": {"limit": STR, "variant": STR, "device": STR, "size": INT, "busbw": FLOAT, "algbw": FLOAT},
    "verdicts": {"suite": STR, "case": STR, "check": STR, "device": STR, "op": STR, "dtype": STR,
                    "outcome": STR, "expected": STR, "detail": STR},
    "convergence": {"model": STR, "device": STR, "dtype": STR, "seed": INT, "converged": BOOL,
                    "time_to_target_s": FLOAT},
    "errors": {"stage": STR, "step": STR, "device": STR, "detail": STR},
    "crashes": {"stage": STR, "step": STR, "figure": STR, "outcome": STR, "detail": STR},
    "skipped": {"stage": STR, "device": STR, "reason": STR},
}


class StoreError(SuiteError):
    pass


def is_store(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


# -- what each record becomes -------------------------------------------------------------------------

def timing_key(record: dict, environment: dict) -> str:
    setup = record.get("setup") or record.get("device") or ""
    world = record.get("world_size")
    if world is None and setup in ONE_DEVICE_SETUPS:
        world = 1
    return tables.figure_label(record.get("model", "?"), record.get("mode", ""), setup,
                               "?" if world is None else world, record.get("dtype") or "",
                               bool(record.get("channels_last")),
                               tables.threads_setting(record.get("threads"), environment))


def limit_key(record: dict) -> str:
    name = record.get("limit") or "?"
    per_size = name in LIMITS and LIMITS.get(name).per_size
    parts = [name, record.get("variant"), record.get("device"), machine_tables.limit_size(record) if per_size else ""]
    return " ".join(str(p) for p in parts if p)


def verdict_key(record: dict) -> str:
    """suite | case | check | device: the report's identity of a verdict (suite.report.machines)."""
    return " | ".join(str(record.get(k) or "") for k in ("suite", "case", "check", "device"))


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _common(table: str, record: dict, environment: dict) -> tuple:
    """(key, value, unit, passed, flags) of a record of `table`."""
    flags = record.get("flags")
    flags = " ".join(f for f in flags if isinstance(f, str)) if isinstance(flags, list) else None
    if table == "verdicts":
        return verdict_key(record), None, None, record.get("passed") is True, flags
    if table == "timings":
        return timing_key(record, environment), _number(record.get("median_s")), "s", None, flags
    if table == "limits":
        return limit_key(record), _number(record.get("value")), record.get("unit"), None, flags
    if table == "convergence":
        return (f"{record.get('model')} seed {record.get('seed')}", _number(record.get("time_to_target_s")), "s",
                None, flags)
    if table == "crashes":
        return f"{record.get('stage', 'run')} {machine_tables.crash_subject(record)}", None, None, False, flags
    if table == "errors":
        return f"{record.get('stage', 'run')} {record.get('step', '?')}", None, None, False, flags
    return f"{record.get('stage', '')} {record.get('limit') or record.get('device') or ''}".strip(), None, None, None, flags


def run_row(run_id: str, loaded: sources.MachineResults, text: str) -> dict:
    env = loaded.environment
    gpus = env.get("gpus")
    return {"run_id": run_id, "machine": loaded.machine_name, "source": loaded.source, "format": loaded.format,
            "status": loaded.status, "started_at": loaded.started_at, "torch": env.get("torch"),
            "cuda": env.get("cuda"), "gpu_driver": env.get("gpu_driver"), "suite_version": loaded.suite_version,
            "cpu": env.get("cpu"), "cores": env.get("cores"),
            "gpus": ", ".join(map(str, gpus)) if isinstance(gpus, list) else gpus,
            "quick": loaded.run.get("quick"), "records": sum(len(getattr(loaded, table)) for table in TABLES),
            "results": text if loaded.format == "torchsuite" else json.dumps(
                {f.name: getattr(loaded, f.name) for f in fields(loaded)}, default=str)}


def loaded_from_json(text: str, source: str) -> sources.MachineResults:
    data = json.loads(text)
    if "records" in data:  # a torchsuite file's own text
        return sources.load_any(source, text)
    return sources.MachineResults(**data)


# -- writing -------------------------------------------------------------------------------------------

class _Columns:
    """Rows of one table, held column by column until written as a Parquet part."""

    def __init__(self, store: Path, table: str, schema: dict, batch: str, rows_per_part: int = ROWS_PER_PART):
        self.store, self.table, self.schema, self.batch = store, table, schema, batch
        self.rows_per_part = rows_per_part
        self.own = [name for name in schema if name not in COMMON]  # the record's own fields
        self.columns = {name: [] for name in schema}
        self.rows, self.parts = 0, []

    def add(self, row: dict) -> None:
        for name, column in self.columns.items():
            column.append(row.get(name))
        self._added()

    def add_record(self, record: dict, run_id: str, machine: str, common: tuple) -> None:
        """A record of a record table: COMMON's fields (common: key, value, unit, passed, flags) and its own."""
        columns = self.columns
        for name, value in zip(COMMON, (run_id, machine, *common)):
            columns[name].append(value)
        for name in self.own:
            columns[name].append(record.get(name))
        self._added()

    def _added(self) -> None:
        self.rows += 1
        if self.rows >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = [_array(pa, values, kind) for values, kind in zip(self.columns.values(), self.schema.values())]
        name = f"{self.table}/part-{self.batch}-{len(self.parts)}.parquet"
        (self.store / self.table).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(arrays, names=list(self.schema)), self.store / name, compression="zstd")
        self.parts.append(name)
        self.columns = {n: [] for n in self.schema}
        self.rows = 0


def _array(pa, values: list, kind: str):
    try:
        return pa.array(values, type=pa.type_for_alias(kind))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return pa.array([_coerce(v, kind) for v in values], type=pa.type_for_alias(kind))


def _coerce(value, kind: str):
    """A value of another type than its column's (a file of another tool, an odd record): kept when it
    converts exactly, else null."""
    if value is None:
        return None
    if kind == STR:
        return value if isinstance(value, str) else json.dumps(json_ready(value))
    if kind == BOOL:
        return value if isinstance(value, bool) else None
    number = _number(value)
    if kind == INT:
        return int(number) if number is not None and number.is_integer() else None
    return number


@dataclass
class _WorkerResult:
    parts: dict = field(default_factory=dict)  # table -> part names
    ingested: list = field(default_factory=list)  # (path, run_id, machine)
    errors: list = field(default_factory=list)  # (path, one line) each


def _ingest_files(store: str, batch: str, files: list[tuple[str, str]]) -> _WorkerResult:
    """Load each (path, run_id) and write its rows as Parquet parts of batch `batch`."""
    store_path = Path(store)
    writers = {"runs": _Columns(store_path, "runs", RUNS, batch, RUNS_PER_PART)}
    writers.update({t: _Columns(store_path, t, {**COMMON, **cols}, batch) for t, cols in TABLES.items()})
    result = _WorkerResult()
    for path, run_id in files:
        try:
            text = read_text(path)
            loaded = sources.load_any(path, text)
        except ResultsFileError as err:
            result.errors.append((path, str(err)))
            continue
        except Exception as err:  # a file of the right format whose content is not what it says
            result.errors.append((path, f"{path}: {one_line(err)}"))
            continue
        for table in TABLES:
            add = writers[table].add_record
            for record in getattr(loaded, table):
                if isinstance(record, dict):
                    add(record, run_id, loaded.machine_name, _common(table, record, loaded.environment))
        writers["runs"].add(run_row(run_id, loaded, text))
        result.ingested.append((path, run_id, loaded.machine_name))
    for table, writer in writers.items():
        writer.flush()
        if writer.parts:
            result.parts[table] = writer.parts
    return result


def file_id(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class IngestSummary:
    ingested: list  # (path, run_id, machine) of each file added
    already: list  # paths whose content the store held
    errors: list  # one line per file that could not be read, in the order given


def ingest(paths, store_dir, workers: int | None = None) -> IngestSummary:
    """Add the results files `paths` to the store at store_dir (made when absent). A file that
    cannot be read is an error line in the summary and the others are ingested."""
    store = Path(store_dir)
    manifest = _read_manifest(store) if store.exists() else _new_manifest()
    if store.exists() and not is_store(store) and any(store.iterdir()):
        raise StoreError(f"{store} is a directory that is not a results store; name a new or empty one")
    store.mkdir(parents=True, exist_ok=True)
    _remove_orphans(store, manifest)
    known = set(run_ids(store)) if manifest["parts"].get("runs") else set()
    paths = list(map(str, paths))
    todo, already, errors = [], [], []
    for path in paths:
        try:
            run_id = file_id(path)
        except OSError as err:
            errors.append((path, f"{path}: cannot read: {err.strerror or err}"))
            continue
        if run_id in known:
            already.append(path)
        else:
            known.add(run_id)
            todo.append((path, run_id))
    batch = uuid.uuid4().hex[:12]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) // 8 or 1))
    chunks = [todo[i::workers] for i in range(workers)]
    if workers == 1:
        results = [_ingest_files(str(store), batch, todo)]
    else:  # forked: the parent's imports are not paid again
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(pool.map(_ingest_files, [str(store)] * workers,
                                    [f"{batch}{i}" for i in range(workers)], chunks))
    ingested = []
    for result in results:
        for table, parts in result.parts.items():
            manifest["parts"].setdefault(table, []).extend(parts)
        ingested += result.ingested
        errors += result.errors
    if ingested:
        write_json_atomically(store / MANIFEST, manifest)
    order = {path: i for i, path in reversed(list(enumerate(paths)))}
    return IngestSummary(ingested, already, [line for _, line in sorted(errors, key=lambda e: order[e[0]])])


def _new_manifest() -> dict:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "parts": {}}


def _read_manifest(store: Path) -> dict:
    path = store / MANIFEST
    if not path.exists():
        return _new_manifest()
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: unreadable store manifest: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("parts"), dict):
        raise StoreError(f"{path}: not a torchsuite results store manifest")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise StoreError(f"{path}: store schema {manifest['schema_version']} is newer than this torchsuite "
                         f"understands ({SCHEMA_VERSION}); upgrade torchsuite to read it")
    return manifest


def _remove_orphans(store: Path, manifest: dict) -> None:
    named = {p for parts in manifest["parts"].values() for p in parts}
    for table in ("runs", *TABLES):
        for part in (store / table).glob("*.parquet") if (store / table).is_dir() else ():
            if f"{table}/{part.name}" not in named:
                part.unlink()


# -- reading -------------------------------------------------------------------------------------------

def parts(stores, table: str) -> list[str]:
    """The Parquet files of `table` that the manifests of `stores` (one directory or several) name."""
    stores = [stores] if isinstance(stores, (str, Path)) else stores
    return [str(Path(s) / p) for s in stores for p in _read_manifest(Path(s))["parts"].get(table, [])]


def connect(stores):
    """A DuckDB connection with a view per table over the stores (one directory or several); a table
    without parts is an empty view of its columns."""
    import duckdb

    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "preserve_insertion_order": False})
    for table, schema in (("runs", RUNS), *((t, {**COMMON, **c}) for t, c in TABLES.items())):
        files = parts(stores, table)
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], union_by_name=true)")
        else:
            columns = ", ".join(f'CAST(NULL AS {_SQL[kind]}) AS "{name}"' for name, kind in schema.items())
            con.execute(f"CREATE VIEW {table} AS SELECT {columns} WHERE false")
    return con


# DuckDB's working memory when it reads a store (beyond it, it spills to a temporary directory).
MEMORY_LIMIT = "1GB"
_SQL = {STR: "VARCHAR", INT: "BIGINT", FLOAT: "DOUBLE", BOOL: "BOOLEAN"}


def run_ids(stores) -> list[str]:
    import pyarrow.parquet as pq

    return [i for f in parts(stores, "runs") for i in pq.read_table(f, columns=["run_id"]).column(0).to_pylist()]


def load_runs(stores, machine: str | None = None) -> list[sources.MachineResults]:
    """Every run of the stores (or one machine's), oldest first, as sources would load its file."""
    con = connect(stores)
    where, params = ("WHERE machine = ?", [machine]) if machine is not None else ("", [])
    rows = con.execute(f"SELECT results, source FROM runs {where} ORDER BY started_at, run_id", params).fetchall()
    return [loaded_from_json(text, source) for text, source in rows]


def load_machine(spec: str) -> sources.MachineResults:
    """STORE@MACHINE: that machine's latest run in the store."""
    store, _, machine = spec.rpartition("@")
    if not is_store(store):
        raise StoreError(f"{spec}: {store} is not a results store (torchsuite ingest makes one)")
    runs = load_runs(store, machine)
    if not runs:
        names = [m for (m,) in connect(store).execute("SELECT DISTINCT machine FROM runs ORDER BY 1").fetchall()]
        raise StoreError(f"{spec}: no machine {machine!r} in the store; it holds {len(names)}: "
                         + ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""))
    return runs[-1]


def machine_count(stores) -> int:
    return connect(stores).execute("SELECT count(DISTINCT machine) FROM runs").fetchone()[0]


def load_input(spec) -> sources.MachineResults:
    """One side of a comparison: a results file, or STORE@MACHINE."""
    text = str(spec)
    if "@" in text and not Path(text).exists() and is_store(text.rpartition("@")[0]):
        return load_machine(text)
    if is_store(text):
        raise StoreError(f"{text} is a results store: name one machine of it as {text}@MACHINE")
    return sources.load_any(text)


def load_inputs(specs) -> list[sources.MachineResults]:
    """Every run the inputs hold: each file's, and each store's every run (oldest first)."""
    loaded = []
    for spec in specs:
        loaded += load_runs(spec) if is_store(spec) else [load_input(spec)]
    return loaded
