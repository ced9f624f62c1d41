"""time_function: the timing core on a user's benchmark function, named `module:function`.

The function takes no arguments and one call is one step, as asv's `time_*` functions and
timeit's statements: its module's own code (imports, data it builds at import) runs once, before
the timing. It is timed like a model's figure (suite.timing.figure): warm-up until the step time
settles, timeit blocks, the canary around it, the contention watch, re-measurement of a disturbed
attempt, flags. Its record is a timing record (suite.timing.record) whose `model` is the target,
`mode` "call" and `batch_size` 1 (throughput: calls a second), without FLOPs or a peak; the
report, `torchsuite compare` and `torchsuite ab`/`bisect` read it like any other figure.
"""
from __future__ import annotations

import torch

from suite.errors import SuiteError, one_line
from suite.target import TargetNotFound, load_target
from suite.threads import torch_threads, usable_cores
from suite.timing.figure import measure_figure
from suite.timing.memory import peak_bytes, reset_peak
from suite.timing.options import TimingOptions, sampling_rules
from suite.timing.record import ProcessMeasurement, build_record
from suite.timing.settings import current_settings

MODE = "call"


def time_function(target: str, *, device: str = "cpu", threads: int | None = None, quick: bool = False,
                  min_run_time: float | None = None) -> dict:
    """Time `target` ("module:function", no arguments, one call a step) in this process; one record.

    device: "cpu" or "cuda" (the clock then synchronises cuda:0 around each block). threads:
    torch intra-op threads while it runs (default all cores).
    """
    from suite.devices import require_device

    if device not in ("cpu", "cuda"):
        raise SuiteError(f"unknown device {device!r}; valid: cpu, cuda")
    require_device(device)
    threads = usable_cores() if threads is None else threads
    if threads < 1:
        raise SuiteError(f"threads must be at least 1, got {threads}")
    try:
        function = load_target(target)
    except (ValueError, TargetNotFound) as err:
        raise SuiteError(str(err)) from None
    options = TimingOptions(mode=MODE, device=device, setup=device, world_size=1, batch_size=1, threads=threads,
                            dtype=None, channels_last=False, **sampling_rules(quick, min_run_time))
    devices = [torch.device(device)]
    with torch_threads(threads):
        try:
            function()  # the first call: a target that raises fails here, named, not inside timeit
        except Exception as err:
            raise SuiteError(f"{target} raised {one_line(err)}") from err
        reset_peak(devices)
        sampling, trust = measure_figure(function, options=options, devices=devices)
        measured = ProcessMeasurement(sampling, trust, *peak_bytes(devices), current_settings())
    return build_record(model=target, options=options, measured=measured, flops=None, calibration=None)
