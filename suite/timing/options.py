"""Resolving time_model's keyword arguments into one validated, complete set of options."""
from __future__ import annotations

from dataclasses import dataclass

from suite.cases.models import ModelSpec
from suite.devices import cuda_count, require_device
from suite.errors import SuiteError
from suite.threads import usable_cores
from suite.timing.setups import (COMPILE_SETUPS, DDP_SETUPS, DEFAULT_COMPILE_BACKEND,  # noqa: F401
                                 ONE_DEVICE_SETUPS, SETUP_DEVICE, SETUPS)
from suite.timing.steps import SERVE, validate_mode_and_dtype

DEFAULT_CPU_DDP_WORLD_SIZE = 2

# What one process samples of a figure. A run's figure comes from several processes
# (suite.timing.processes), so each one's share is short: a full run's four processes sample
# 0.5 s each, a quick run's two 0.2 s each.
MIN_RUN_TIME = 0.5
QUICK_MIN_RUN_TIME = 0.2
WARMUP_STEPS = 5
QUICK_WARMUP_STEPS = 2
# Warm-up lasts at least this many times min_run_time and until the step time settles
# (suite.timing.measure): 0.5 s in full runs, 0.3 s in quick ones.
WARMUP_FRACTION, QUICK_WARMUP_FRACTION = 1.0, 1.5
MIN_SAMPLES = 10
QUICK_MIN_SAMPLES = 5
# Full runs sample on until the 95% interval of the process's median is within 2% of it, or the cap.
TARGET_PRECISION = 0.02
# Past this cap a process stops seeking precision; past twice it (measure.HARD_CAP_FACTOR) it
# stops whatever the count: a step too slow for MIN_SAMPLES blocks is flagged few_samples.
TIME_CAP_S = 3.0
# A disturbed figure (contended, drift) is measured again after waiting up to the quiet budget.
ATTEMPTS, QUICK_ATTEMPTS = 3, 2
QUIET_BUDGET_S, QUICK_QUIET_BUDGET_S = 5.0, 2.0
# Serving figures: one call a sample, enough of them for a p99 (a full run's processes pool theirs).
SERVE_MIN_SAMPLES, QUICK_SERVE_MIN_SAMPLES = 100, 30


@dataclass(frozen=True)
class TimingOptions:
    """What a figure asks for, as torch.utils.benchmark's TaskSpec does; what one process
    measured is suite.timing.record.ProcessMeasurement."""

    mode: str
    device: str
    setup: str
    world_size: int
    batch_size: int  # per device
    threads: int  # per process
    dtype: str
    channels_last: bool
    min_run_time: float
    warmup_steps: int
    warmup_s: float
    quick: bool
    min_samples: int
    target_precision: float | None  # None: no precision target (quick runs)
    time_cap_s: float
    attempts: int
    quiet_budget_s: float
    compile_backend: str | None = None  # set for the compile setups
    measure_compile: bool = True  # the compile setups: time the cold and warm compile (suite.timing.compiled)

    @property
    def steps_per_sample(self) -> int | None:
        """1 for serving (each sample is one call's latency); None: blocks sized to the step."""
        return 1 if self.mode == SERVE else None

    @property
    def peak_devices(self) -> int:
        """How many calibrated devices the run's peak adds up: GPUs, or 1 for the CPU."""
        return self.world_size if self.device == "cuda" else 1

    @property
    def calibration_threads(self) -> int:
        """CPU threads the whole run uses, the fair thread count for its peak.

        On GPUs host threads do not change the matmul peak: one calibration (at all cores,
        the default key) serves every GPU setup.
        """
        if self.device == "cuda":
            return usable_cores()
        if self.setup == "cpu-ddp":
            return min(usable_cores(), self.threads * self.world_size)
        return self.threads


def resolve_options(spec: ModelSpec, *, mode: str, device: str | None, batch_size: int | None,
                    threads: int | None, world_size: int | None, setup: str | None, dtype: str,
                    channels_last: bool, min_run_time: float | None, quick: bool,
                    compile_backend: str | None = None, measure_compile: bool = True,
                    seek_precision: bool = True) -> TimingOptions:
    validate_mode_and_dtype(mode, dtype)
    setup = _resolve_setup(setup, device, world_size)
    if setup in COMPILE_SETUPS:
        compile_backend = compile_backend or DEFAULT_COMPILE_BACKEND
    elif compile_backend is not None:
        raise SuiteError(f"compile_backend needs a compile setup ({', '.join(COMPILE_SETUPS)}), not {setup!r}")
    device = SETUP_DEVICE[setup]
    world_size = _resolve_world_size(setup, world_size)
    if device == "cuda":
        require_device("cuda", world_size)
    if threads is None:
        threads = max(1, usable_cores() // world_size) if setup in DDP_SETUPS else usable_cores()
    if threads < 1:
        raise SuiteError(f"threads must be at least 1, got {threads}")
    batch_size = batch_size or (1 if mode == SERVE else spec.batch_size(device))
    rules = sampling_rules(quick, min_run_time)
    if not seek_precision:  # one of a figure's processes: the processes give its precision
        rules["target_precision"] = None
    if mode == SERVE:  # a count of calls for the tail, not a precision of the median
        if setup not in ONE_DEVICE_SETUPS or compile_backend:
            raise SuiteError(f"mode {SERVE!r} runs on one device, eager; not in setup {setup!r}")
        rules.update(min_samples=QUICK_SERVE_MIN_SAMPLES if quick else SERVE_MIN_SAMPLES, target_precision=None)
    return TimingOptions(
        mode=mode, device=device, setup=setup, world_size=world_size, batch_size=batch_size,
        threads=threads, dtype=dtype, channels_last=channels_last, compile_backend=compile_backend,
        measure_compile=measure_compile, **rules)


def sampling_rules(quick: bool, min_run_time: float | None = None) -> dict:
    """How a figure is sampled and re-measured, full or quick (the TimingOptions fields)."""
    if min_run_time is None:
        min_run_time = QUICK_MIN_RUN_TIME if quick else MIN_RUN_TIME
    return {"min_run_time": min_run_time, "quick": quick,
            "warmup_steps": QUICK_WARMUP_STEPS if quick else WARMUP_STEPS,
            "warmup_s": min_run_time * (QUICK_WARMUP_FRACTION if quick else WARMUP_FRACTION),
            "min_samples": QUICK_MIN_SAMPLES if quick else MIN_SAMPLES,
            "target_precision": None if quick else TARGET_PRECISION,
            "time_cap_s": max(TIME_CAP_S, min_run_time),
            "attempts": QUICK_ATTEMPTS if quick else ATTEMPTS,
            "quiet_budget_s": QUICK_QUIET_BUDGET_S if quick else QUIET_BUDGET_S}


def _resolve_setup(setup: str | None, device: str | None, world_size: int | None) -> str:
    if setup is None:
        kind = device or "cpu"
        if kind not in ("cpu", "cuda"):
            raise SuiteError(f"unknown device {kind!r}; valid: cpu, cuda")
        return kind if (world_size or 1) == 1 else f"{kind}-ddp"
    if setup not in SETUP_DEVICE:
        raise SuiteError(f"unknown setup {setup!r}; valid: {', '.join(SETUPS)}")
    if device is not None and device != SETUP_DEVICE[setup]:
        raise SuiteError(f"setup {setup!r} runs on {SETUP_DEVICE[setup]}, not {device!r}")
    return setup


def _resolve_world_size(setup: str, world_size: int | None) -> int:
    if setup in ONE_DEVICE_SETUPS:
        if world_size not in (None, 1):
            raise SuiteError(f"setup {setup!r} is one process on one device; world_size must be 1")
        return 1
    if world_size is None:
        world_size = DEFAULT_CPU_DDP_WORLD_SIZE if setup == "cpu-ddp" else max(1, cuda_count())
    if world_size < 1:
        raise SuiteError(f"world_size must be at least 1, got {world_size}")
    return world_size
