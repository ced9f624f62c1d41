"""The one timing core: time_model() for the registered models on CPU, one GPU and several.

Modules: core (time_model), options (argument resolution), steps (the timed iteration),
measure (warm-up, timeit blocks, CUDA sync), stats (median, IQR, noisy), flops (FlopCounterMode),
memory (peaks), peak (calibrate_peak), record (the result fields), distributed (DDP ranks),
plan (iter_setups, batch-size sweeps, scaling efficiency), benchmark_bridge (pytest-benchmark),
processes and worker (a run's figures from several fresh processes, merged).
"""
import logging


class _NoCudaRuntimeNotice(logging.Filter):
    """torch.utils.benchmark imports torch.utils.cpp_extension, which logs "No CUDA runtime is
    found" on every import where CUDA is absent: noise from each process that times anything,
    and nothing here builds C++ extensions. Only that message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaRuntimeNotice())

from suite.timing.core import time_model  # noqa: E402  (after the filter, which its imports need)
from suite.timing.peak import calibrate_peak  # noqa: E402
from suite.timing.plan import attach_scaling_efficiency, iter_setups, sweep_batch_sizes  # noqa: E402

__all__ = ["time_model", "calibrate_peak", "iter_setups", "sweep_batch_sizes",
           "attach_scaling_efficiency"]
