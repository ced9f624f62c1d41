"""Import a module of torch's private test utilities (torch.testing._internal) without the
global state its import leaves behind.

Those modules are written for PyTorch's own test runs, and importing them changes the process:
- torch.backends.disable_global_flags() freezes the backend flags, after which setting a cuDNN
  or TF32 flag outside a `flags()` block raises (the suite's timings set them);
- TorchScript's ScriptFunction and ScriptMethod `__call__` are replaced by profiling wrappers;
- hypothesis loads the "dev" settings profile, which a user's own hypothesis tests would inherit;
- os.environ may gain variables (TORCHINDUCTOR_CACHE_DIR, from the inductor modules it imports).

One lookup is answered instead of left as it is: every OpInfo `sample_inputs()` call looks twice
for a running unittest.TestCase up the stack (for per-test sample skips, and to track the sample on
it) with inspect.stack(), which reads every frame's source file and, for a frame without one (the
frozen runpy of `python -m`), scans all of sys.modules. The suite's checks never run inside one
of torch's unittest tests, so the answer is always None. Answered at once, the quick op sweep
takes about 1 s, in a worker (suite.isolation) too, where it took 12 s; the custom Function
corpus's samples 0.1 s instead of 4 s. And one function is replaced by its equal: before each
sample, `set_rng_seed` seeds the generators with torch.manual_seed, which costs a formatted stack
for every accelerator not yet initialised (suite.devices.manual_seed); the suite's seeding gives
the CPU and the GPUs the same seed for a thousandth of the cost (24 s of a full op sweep).

This process is not one of their test runs, so each is put back as it was before the first
import. Warning filters that third-party libraries add on import (numpy, scipy, sympy) stay: they
are those libraries' own, not the test utilities'.
"""
from __future__ import annotations

import importlib
import os
import random
import sys

import torch

from suite.devices import manual_seed


def _hypothesis_profile() -> str | None:
    settings = getattr(sys.modules.get("hypothesis"), "settings", None)
    return getattr(settings, "_current_profile", None) if settings is not None else None


def import_released(module_name: str):
    """`importlib.import_module(module_name)`, with the process's global state as it was before.

    Raises ImportError (naming the missing module) when it cannot be imported, for instance
    without expecttest or hypothesis."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    frozen = torch.backends.flags_frozen()
    script_calls = torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__
    environment = dict(os.environ)
    profile = _hypothesis_profile()
    try:
        return importlib.import_module(module_name)
    finally:
        for name in ("opinfo.core", "common_utils"):
            if f"torch.testing._internal.{name}" in sys.modules:
                sys.modules[f"torch.testing._internal.{name}"].extract_test_fn = _no_test
        if "torch.testing._internal.common_utils" in sys.modules:
            sys.modules["torch.testing._internal.common_utils"].set_rng_seed = _set_rng_seed
        if not frozen and torch.backends.flags_frozen():
            # torch.backends offers no public undo; the flag lives in the module's own namespace.
            torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
        torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__ = script_calls
        for name in set(os.environ) - set(environment):
            del os.environ[name]
        os.environ.update(environment)
        if profile is not None and _hypothesis_profile() != profile:
            sys.modules["hypothesis"].settings.load_profile(profile)
        elif profile is None and "hypothesis" in sys.modules:
            sys.modules["hypothesis"].settings.load_profile("default")


def _no_test() -> None:
    return None


def _set_rng_seed(seed=None) -> None:
    """common_utils.set_rng_seed's seeds (its SEED by default), set as suite.devices.manual_seed sets them."""
    common_utils = sys.modules["torch.testing._internal.common_utils"]
    seed = common_utils.SEED if seed is None else seed
    manual_seed(seed)
    random.seed(seed)
    if common_utils.TEST_NUMPY:
        import numpy

        numpy.random.seed(seed)
