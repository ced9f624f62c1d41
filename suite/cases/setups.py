"""The timing setups: ways to run a model (device, processes, precision, memory format).

Declared once here; pytest-benchmark, asv, `torchsuite run` (suite.timing.plan.iter_setups)
and the report's asv reader all read this registry.
"""
from __future__ import annotations

from typing import NamedTuple

from suite.cases.registry import Registry

MODES = ("train", "eval")


class SetupVariant(NamedTuple):
    id: str
    kwargs: dict  # time_model keywords
    modes: tuple[str, ...]
    device: str
    devices_needed: int = 1
    distributed: bool = False  # runs on the DDP process pool
    in_quick_runs: bool = True

    @property
    def name(self) -> str:
        return self.id

    @property
    def kind(self) -> str:
        return "setup"

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{options}; modes {'/'.join(self.modes)}; needs {self.devices_needed} {self.device}"


CASES: Registry[SetupVariant] = Registry("setup")

CASES.add(SetupVariant("cpu", {"setup": "cpu"}, MODES, "cpu"))
# one thread per rank, so N ranks get N times what the 1-thread cpu baseline gets
CASES.add(SetupVariant("cpu-ddp", {"setup": "cpu-ddp", "world_size": 2, "threads": 1}, ("train",),
                       "cpu", distributed=True))
CASES.add(SetupVariant("cuda", {"setup": "cuda"}, MODES, "cuda"))
CASES.add(SetupVariant("cuda-amp_bf16", {"setup": "cuda", "dtype": "bfloat16"}, MODES, "cuda",
                       in_quick_runs=False))
CASES.add(SetupVariant("cuda-channels_last", {"setup": "cuda", "channels_last": True}, MODES, "cuda",
                       in_quick_runs=False))
# world_size left to time_model: every GPU
CASES.add(SetupVariant("dataparallel", {"setup": "dataparallel"}, MODES, "cuda", devices_needed=2))
# DDP is about the gradient all-reduce, which eval does not have
CASES.add(SetupVariant("cuda-ddp", {"setup": "cuda-ddp"}, ("train",), "cuda", devices_needed=2,
                       distributed=True))
