"""What hardware this process can use. Absent hardware is a skip in tests, an error when asked for."""
from __future__ import annotations

import torch

from suite.errors import DeviceUnavailableError

DEVICE_KINDS = ("cpu", "cuda")


# The torch.distributed backend for each device kind: gloo on CPUs, NCCL on NVIDIA GPUs.
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


def default_backend(device: str) -> str:
    return BACKENDS[torch.device(device).type]


def manual_seed(seed: int) -> None:
    """torch.manual_seed for the devices the suite runs on: the CPU's generator, and every GPU's
    where CUDA is available. torch.manual_seed itself also queues a seed for each accelerator
    it has not initialised (CUDA, XPU, MTIA), and every queued seed formats the whole stack
    (traceback.format_stack): 0.2-1 ms a call, which was 120 s of a full op sweep's 260 s here."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_devices() -> list[str]:
    """Device kinds present here, CPU first."""
    return ["cpu"] + (["cuda"] if cuda_count() else [])


def missing_reason(kind: str, count: int = 1) -> str | None:
    """Why `count` devices of `kind` cannot be used here, or None when they can."""
    if kind not in DEVICE_KINDS:
        raise DeviceUnavailableError(f"unknown device {kind!r}; valid: {', '.join(DEVICE_KINDS)}")
    if kind == "cpu":
        return None
    have = cuda_count()
    if have >= count:
        return None
    what = "a CUDA GPU" if count == 1 else f"{count} CUDA GPUs"
    return f"needs {what}; this machine has {have} (torch {torch.__version__}, CUDA build {torch.version.cuda})"


def require_device(kind: str, count: int = 1) -> torch.device:
    """The device the user asked for, or a DeviceUnavailableError saying what is missing."""
    reason = missing_reason(kind, count)
    if reason:
        raise DeviceUnavailableError(f"device {kind!r} requested but unavailable: {reason}")
    return torch.device(kind)


def resolve_devices(request: str) -> list[str]:
    """`cpu`, `cuda` or `all` (every kind present) to a list of device kinds."""
    if request == "all":
        return available_devices()
    require_device(request)
    return [request]


def synchronize(device: torch.device | str) -> None:
    """Wait for every device of this kind the process uses (all GPUs for multi-GPU work)."""
    if torch.device(device).type == "cuda":
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)
