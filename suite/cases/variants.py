"""The timing variants: ways to run a model (device, processes, precision, memory format).

A variant has an id ("cuda-amp_bf16") and the time_model keywords it stands for; among them
the timing *setup* ("cpu", "cpu-ddp", "cuda", "cuda-ddp", "dataparallel", "cpu-compile",
"cuda-compile"), which says how many processes and devices one iteration uses, and whether
the model runs compiled. Several variants share a setup.

Declared once here; pytest-benchmark, asv, `torchsuite run` (suite.timing.plan.iter_setups)
and the report's asv reader all read this registry.
"""
from __future__ import annotations

from typing import NamedTuple

from suite.cases.registry import Registry

MODES = ("train", "eval")
# Serving: a forward at batch 1, each call timed alone, for latency percentiles; for the models
# people serve (ModelSpec.serving), on the one-device eager setups.
SERVE = "serve"


class TimingVariant(NamedTuple):
    id: str
    kwargs: dict  # time_model keywords
    modes: tuple[str, ...]
    device: str
    devices_needed: int = 1
    distributed: bool = False  # runs on the DDP process pool
    quick: bool = True  # part of `torchsuite run --quick`
    sweep: str = ""  # a full run times it at each of these: "threads" (1, 2, 4, ... cores) or "world_size"
    min_cores: int = 1  # CPU cores it needs

    @property
    def name(self) -> str:
        return self.id

    @property
    def kind(self) -> str:
        return "variant"

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{options}; modes {'/'.join(self.modes)}; needs {self.devices_needed} {self.device}"


CASES: Registry[TimingVariant] = Registry("variant")

CASES.add(TimingVariant("cpu", {"setup": "cpu"}, (*MODES, SERVE), "cpu", sweep="threads"))
# one thread per rank, so N ranks get N times what the 1-thread cpu baseline gets. Out of quick
# runs: every timing process starts a pool of ranks that import torch, a third of a quick run's timings.
CASES.add(TimingVariant("cpu-ddp", {"setup": "cpu-ddp", "world_size": 2, "threads": 1}, ("train",),
                       "cpu", distributed=True, sweep="world_size", min_cores=2, quick=False))
CASES.add(TimingVariant("cuda", {"setup": "cuda"}, (*MODES, SERVE), "cuda"))
CASES.add(TimingVariant("cuda-amp_bf16", {"setup": "cuda", "dtype": "bfloat16"}, MODES, "cuda",
                       quick=False))
CASES.add(TimingVariant("cuda-channels_last", {"setup": "cuda", "channels_last": True}, MODES, "cuda",
                       quick=False))
# The model under torch.compile (inductor), timed after compiling; compile times in the record.
# Out of quick runs: on 2 cores a cold inductor compile costs 2.0 to 7.2 s a model, and every
# timing process's first compile about 10 s more (inductor's imports; docs/compile.md).
CASES.add(TimingVariant("cpu-compile", {"setup": "cpu-compile"}, MODES, "cpu", quick=False))
CASES.add(TimingVariant("cuda-compile", {"setup": "cuda-compile"}, MODES, "cuda", quick=False))
# world_size left to time_model: every GPU
CASES.add(TimingVariant("dataparallel", {"setup": "dataparallel"}, MODES, "cuda", devices_needed=2))
# DDP is about the gradient all-reduce, which eval does not have
CASES.add(TimingVariant("cuda-ddp", {"setup": "cuda-ddp"}, ("train",), "cuda", devices_needed=2,
                       distributed=True))
