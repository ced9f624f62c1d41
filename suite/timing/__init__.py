"""The one timing core: time_model() for the registered models on CPU, one GPU and several.

Modules: core (time_model), options (argument resolution), steps (the timed iteration),
measure (warm-up, Timer, CUDA sync), stats (median, IQR, noisy), flops (FlopCounterMode),
memory (peaks), peak (calibrate_peak), record (the result fields), distributed (DDP ranks),
plan (iter_setups, batch-size sweeps, scaling efficiency), benchmark_bridge (pytest-benchmark).
"""
from suite.timing.core import time_model
from suite.timing.peak import calibrate_peak
from suite.timing.plan import attach_scaling_efficiency, iter_setups, sweep_batch_sizes

__all__ = ["time_model", "calibrate_peak", "iter_setups", "sweep_batch_sizes",
           "attach_scaling_efficiency"]
