"""time_model: the one function in torchsuite that times anything.

Everything that reports a speed (pytest-benchmark tests, asv benchmarks, `torchsuite run`)
calls this and stores the record it returns (fields: suite.timing.record).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from suite.cases.models import CASES as MODELS
from suite.cases.models import ModelSpec
from suite.threads import torch_threads
from suite.timing.figure import measure_figure
from suite.timing.flops import count_flops
from suite.timing.memory import peak_bytes, reset_peak
from suite.timing.options import DDP_SETUPS, TimingOptions, resolve_options
from suite.timing.peak import calibrate_peak, peak_dtype_for
from suite.timing.record import ProcessMeasurement, build_record
from suite.timing.settings import current_settings
from suite.timing.steps import build_step


def time_model(spec_or_name: ModelSpec | str, *, mode: str = "train", device: str | None = None,
               batch_size: int | None = None, threads: int | None = None,
               world_size: int | None = None, setup: str | None = None, dtype: str = "float32",
               channels_last: bool = False, min_run_time: float | None = None,
               quick: bool = False, compile_backend: str | None = None, measure_compile: bool = True,
               seek_precision: bool = True) -> dict:
    """Time one registered model in one setup; return one record (suite.timing.record).

    mode: "train" or "eval". device: "cpu" (default) or "cuda". setup: "cpu", "cpu-ddp",
    "cuda", "cuda-ddp", "dataparallel", "cpu-compile" or "cuda-compile"; by default
    "cpu"/"cuda", or "<device>-ddp" when world_size > 1. The compile setups time the model under
    torch.compile(backend=compile_backend, default inductor) after compiling it, and record
    the compile's cold and warm seconds (suite.timing.compiled; measure_compile=False: compiled
    once over this process's inductor cache, no seconds recorded). batch_size: per device, default the registry's for the device kind.
    threads: torch threads (per rank for DDP), default all cores (divided among DDP ranks).
    world_size: DDP ranks or DataParallel GPUs (default 2 ranks on CPU, every GPU on CUDA).
    dtype: "float32" or "bfloat16" (AMP autocast). min_run_time: seconds of timed iterations
    (0.5, quick 0.2). seek_precision: full rules sample on until the median's 95% interval is
    within 2% (or the cap); False: they stop at min_samples and min_run_time, as quick ones do
    (a run's processes: the figure's precision comes from them, suite.timing.processes). A requested absent device raises DeviceUnavailableError.
    """
    spec = spec_or_name if isinstance(spec_or_name, ModelSpec) else MODELS.get(spec_or_name)
    options = resolve_options(
        spec, mode=mode, device=device, batch_size=batch_size, threads=threads,
        world_size=world_size, setup=setup, dtype=dtype, channels_last=channels_last,
        min_run_time=min_run_time, quick=quick, compile_backend=compile_backend, measure_compile=measure_compile,
        seek_precision=seek_precision)
    calibration = calibrate_peak(options.device, peak_dtype_for(options.device, options.dtype),
                                 threads=options.calibration_threads, quick=quick)
    if options.setup in DDP_SETUPS:
        from suite.timing.distributed import time_ddp

        measured = time_ddp(spec, options)
    else:
        measured = time_in_process(spec, options)
    with torch_threads(options.threads):
        flops = count_flops(spec, options.mode, options.batch_size) * options.world_size
    return build_record(model=spec.name, options=options, measured=measured, flops=flops,
                        calibration=calibration, tokens_per_sample=spec.tokens_per_sample)


def devices_for(options: TimingOptions) -> list[torch.device]:
    if options.device == "cpu":
        return [torch.device("cpu")]
    return [torch.device("cuda", i) for i in range(options.world_size)]


def in_process_step(spec: ModelSpec, options: TimingOptions):
    """(make_step, devices) for the one-process setups: cpu, cuda, dataparallel (one process,
    all GPUs) and the compile setups; make_step() builds a fresh step."""
    devices = devices_for(options)
    wrap = None
    if options.setup == "dataparallel":
        wrap = lambda model: nn.DataParallel(model, device_ids=[d.index for d in devices])  # noqa: E731
    elif options.compile_backend:
        wrap = lambda model: torch.compile(model, backend=options.compile_backend)  # noqa: E731
    # DataParallel splits one batch across its GPUs: give it batch_size per GPU.
    return (lambda: build_step(spec, options.mode, devices[0], options.batch_size * options.world_size,
                               dtype=options.dtype, channels_last=options.channels_last, wrap=wrap)), devices


def time_in_process(spec: ModelSpec, options: TimingOptions) -> ProcessMeasurement:
    with torch_threads(options.threads):
        make_step, devices = in_process_step(spec, options)
        with _ready_step(make_step, options, devices[0]) as (step, compile_times):
            reset_peak(devices)
            sampling, trust = measure_figure(step, options=options, devices=devices)
        return ProcessMeasurement(sampling, trust, *peak_bytes(devices), current_settings(), compile_times)


@contextlib.contextmanager
def _ready_step(make_step, options: TimingOptions, device):
    """(step, CompileTimes or None): compiled first, its compile times measured, for the compile setups."""
    if not options.compile_backend:
        yield make_step(), None
        return
    from suite.timing.compiled import compiled_step
    from suite.vec_isa import share_vec_isa_probe

    if options.compile_backend == "inductor" and device.type == "cpu":
        share_vec_isa_probe()  # the machine's, not the model's: never part of a figure's compile time
    with compiled_step(make_step, device, options.measure_compile) as ready:
        yield ready
