"""The compiled setups (cpu-compile, cuda-compile): compile time, cold and warm, then the same figure.

A compiled step is timed by the same core as an eager one, after compilation, so the figure
is the compiled program's steady speed. Compilation is measured apart, twice:
- cold: in a fresh, empty inductor (and Triton) cache directory, with inductor's in-memory
  caches cleared (torch._inductor.utils.fresh_cache): what a new machine or a new PyTorch pays;
- warm: dynamo reset and inductor's in-memory caches cleared, the same model compiled again
  over the on-disk cache the cold compile filled: what a later process pays once inductor is
  imported (a new process also pays those imports, seconds on a small machine).
Each is the wall time of the first step (tracing, compiling forward and backward, one run).

A run times each figure in several processes (suite.timing.processes); only the first measures
the compile, and it leaves what it compiled in the process's own inductor cache (the directory
inductor would have used, TORCHINDUCTOR_CACHE_DIR or its default), so the later processes
compile once, warm, as any later process of a user's would: before this, every process of a full
run paid a cold compile of every compiled figure, 40% of the run's timing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from suite.devices import synchronize


@dataclass(frozen=True)
class CompileTimes:
    """Wall seconds of the first compiled step: cold (empty caches) and warm (over the disk cache)."""

    cold_s: float
    warm_s: float


def _first_step_s(make_step: Callable[[], Callable[[], None]], device) -> tuple[Callable[[], None], float]:
    step = make_step()
    start = time.perf_counter()
    step()
    synchronize(device)
    return step, time.perf_counter() - start


@contextlib.contextmanager
def compiled_step(make_step: Callable[[], Callable[[], None]], device,
                  measure: bool = True) -> Iterator[tuple[Callable[[], None], CompileTimes | None]]:
    """(the compiled step, its compile times); `measure=False`: compiled once over the process's
    own cache, no times (None)."""
    from torch import _dynamo
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    from torch._inductor.utils import clear_caches, fresh_cache

    try:
        _dynamo.reset()
        if not measure:
            yield _first_step_s(make_step, device)[0], None
            return
        own_cache = cache_dir()
        with fresh_cache():
            _, cold_s = _first_step_s(make_step, device)
            _dynamo.reset()
            clear_caches()  # only the cache on disk answers, as it does for a new process
            step, warm_s = _first_step_s(make_step, device)
            # content-addressed entries: what the next process of the run would have compiled
            shutil.copytree(cache_dir(), own_cache, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"),
                            copy_function=_add_if_absent)
            yield step, CompileTimes(cold_s, warm_s)
    finally:
        _dynamo.reset()  # no compiled graph of this figure answers for the next one


def _add_if_absent(source: str, target: str) -> str:
    """Copy a cache entry that the target cache lacks; never rewrite one it has. Another process
    (the run itself, after its compile checks) may have that entry's kernel library loaded: a
    library rewritten in place under it corrupts its mapped code and data, and the process died
    of a segmentation fault at its next garbage collection (every full run, seen here). An entry
    is named by its content, so the one present is as good; a new one appears whole (renamed)."""
    if not os.path.exists(target):
        partial = f"{target}.{os.getpid()}.partial"
        try:
            shutil.copy2(source, partial)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return target
