"""What machine and PyTorch stack a result came from."""
from __future__ import annotations

import os
import platform
import socket


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # absent or broken: report it as missing, do not fail the capture
        return None


def capture(name: str | None = None) -> dict:
    """A JSON-ready description of this machine, its Python and its PyTorch stack."""
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "name": name or socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "torchaudio": _version("torchaudio"),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "gpu_driver": _gpu_driver() if cuda else None,
    }
    return info


def _gpu_driver() -> str | None:
    try:
        from torch.utils import collect_env

        return collect_env.get_nvidia_driver_version(collect_env.run)
    except Exception:  # collect_env's helpers are internal; a missing driver string is not fatal
        return None
