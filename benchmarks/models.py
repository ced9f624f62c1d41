"""asv benchmarks for every registered model x mode x setup variant, timed by suite.time_model.

asv must not time anything itself (the project has one timing core), so:

- `setup_cache` runs time_model once per (model, mode, variant) this machine can run and
  hands the records to every benchmark below; asv keeps the cache for the whole run.
- `time_iteration` is an asv time benchmark whose clock (`timer`) advances by the core's raw
  samples: asv reads "elapsed" as clock() after minus before, and each call of the benchmark
  moves the clock forward by the next sample. asv's statistics, `asv compare` and `asv
  publish` therefore see seconds per iteration exactly as the core measured them (its
  threads, warm-up and CUDA synchronisation): as many samples as the core took, up to 100.
- `track_*` report the core's throughput, peak fraction and peak memory;
  `ModelMemory.peakmem_iteration` is asv's own peak-RSS reading over a few iterations
  (memory, not time).

Absent hardware raises NotImplementedError in setup, which asv records as skipped.
Set TORCHSUITE_QUICK=1 for the core's quick settings (with `asv run --quick`), and
TORCHSUITE_WORKLOADS to a workload set (suite.cases.models.models_for: default, article,
standard, all) to time other models than a default `torchsuite run` times on each device, or
TORCHSUITE_MODELS to comma-separated model names to time only those, TORCHSUITE_VARIANTS to
comma-separated timing variants likewise.
"""
import os

from suite.cases.models import CASES as MODELS, models_for
from suite.timing.plan import VARIANT_BY_ID, modes_for, variant_applies, variant_skip_reason
from suite.cases.variants import CASES as VARIANT_CASES, MODES, SERVE

QUICK = os.environ.get("TORCHSUITE_QUICK", "") not in ("", "0")
WORKLOADS = os.environ.get("TORCHSUITE_WORKLOADS", "default")
ONLY = [name.strip() for name in os.environ.get("TORCHSUITE_MODELS", "").split(",") if name.strip()]
# The benchmarks' model parameter: the models asked for, or those a run of the workload set times on
# any device. asv walks every combination of the parameters, skipped ones too: the tests' quick asv
# run took 41 s with all 17 registered models as parameters and 16 s with the 2 it times.
MODEL_NAMES = ONLY or list(dict.fromkeys(models_for("cpu", WORKLOADS) + models_for("cuda", WORKLOADS)))
# The variant parameter likewise: TORCHSUITE_VARIANTS=a,b (`torchsuite list --kind variant`), or every one.
VARIANT_IDS = [v.id for v in VARIANT_CASES.select(
    [name.strip() for name in os.environ.get("TORCHSUITE_VARIANTS", "").split(",") if name.strip()] or None)]
IN_PROCESS_PEAKMEM_STEPS = 3
MAX_ASV_SAMPLES = 100  # keeps result files small; the core's median needs no more
_DEFAULT_OPTIONS = {"batch_size": None, "threads": None, "world_size": None, "setup": None,
                    "device": None, "dtype": "float32", "channels_last": False}


def _key(model, mode, variant_id):
    return f"{model}/{mode}/{variant_id}"


def _skip_reason(model, mode, variant):
    if not ONLY and model not in models_for(variant.device, WORKLOADS):
        return f"{model} is not in the {WORKLOADS!r} workloads on {variant.device} (TORCHSUITE_WORKLOADS)"
    if not variant_applies(variant, MODELS.get(model)):
        return f"{variant.id} does not apply to {model}"
    if mode not in modes_for(variant, MODELS.get(model)):
        return f"{variant.id} times {model} in {', '.join(modes_for(variant, MODELS.get(model)))} only"
    if QUICK and not variant.quick:
        return f"{variant.id} is left out of quick runs, as in `torchsuite run --quick`"
    return variant_skip_reason(variant)


def records_for_every_case():
    """{key: record or {"error": text}} for every case this machine can run."""
    from suite import time_model
    from suite.errors import SuiteError

    records = {}
    for model in MODEL_NAMES:
        for variant in (VARIANT_BY_ID[name] for name in VARIANT_IDS):
            for mode in variant.modes:
                if _skip_reason(model, mode, variant):
                    continue
                try:
                    records[_key(model, mode, variant.id)] = time_model(
                        model, mode=mode, quick=QUICK, **variant.kwargs)
                except (SuiteError, RuntimeError) as error:  # one case failing keeps the others
                    records[_key(model, mode, variant.id)] = {"error": f"{type(error).__name__}: {error}"}
    return records


class CoreClock:
    """A monotonic clock that only moves when the timed benchmark hands it a core sample."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Models:
    params = (MODEL_NAMES, [*MODES, SERVE], VARIANT_IDS)
    param_names = ["model", "mode", "variant"]
    timeout = 600

    # Time benchmarks: one asv call = one core sample; no asv warm-up (the core warmed up),
    # one process (the samples come from setup_cache's one measurement). setup sets `repeat`
    # to the number of samples the core took.
    timer = CoreClock()
    number = 1
    repeat = (1, 20, 600.0)
    warmup_time = 0.0
    rounds = 1
    min_run_count = 1

    def setup_cache(self):
        return records_for_every_case()

    setup_cache.timeout = 3600

    def setup(self, records, model, mode, variant_id):
        variant = VARIANT_BY_ID[variant_id]
        reason = _skip_reason(model, mode, variant)
        if reason:
            raise NotImplementedError(reason)
        record = records[_key(model, mode, variant_id)]
        if "error" in record:
            raise RuntimeError(record["error"])
        # asv re-runs setup before every sample; the cursor must survive that to walk the samples
        if getattr(self, "record", None) is not record:
            self.record = record
            self._next_sample = 0
        # asv reads `repeat` again after setup: ask for as many samples as the core took
        samples = min(len(record["samples"]), MAX_ASV_SAMPLES)
        self.repeat = (samples, samples, 3600.0)

    def time_iteration(self, records, model, mode, variant_id):
        samples = self.record["samples"]
        self.timer.now += samples[self._next_sample % len(samples)]
        self._next_sample += 1

    def track_throughput(self, records, model, mode, variant_id):
        return self.record["throughput"]

    track_throughput.unit = "samples/s"

    def track_peak_fraction(self, records, model, mode, variant_id):
        return self.record["peak_fraction"]

    track_peak_fraction.unit = "fraction of calibrated peak FLOP/s"

    def track_peak_mem(self, records, model, mode, variant_id):
        return self.record["peak_mem_bytes"]

    track_peak_mem.unit = "bytes"


class ModelMemory:
    """asv's own peak-RSS reading over a few iterations of each in-process setup."""

    params = Models.params
    param_names = Models.param_names
    timeout = 600

    def setup(self, model, mode, variant_id):
        from suite.timing.core import in_process_step
        from suite.timing.options import resolve_options

        variant = VARIANT_BY_ID[variant_id]
        reason = _skip_reason(model, mode, variant)
        if reason:
            raise NotImplementedError(reason)
        if variant.distributed:
            raise NotImplementedError("DDP ranks run in other processes; see Models.track_peak_mem")
        spec = MODELS.get(model)
        options = resolve_options(spec, mode=mode, min_run_time=None, quick=QUICK,
                                  **{**_DEFAULT_OPTIONS, **variant.kwargs})
        make_step, _ = in_process_step(spec, options)
        self.step = make_step()

    def peakmem_iteration(self, model, mode, variant_id):
        for _ in range(IN_PROCESS_PEAKMEM_STEPS):
            self.step()
