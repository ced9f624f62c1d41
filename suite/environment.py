"""What machine and PyTorch stack a result came from."""
from __future__ import annotations

import functools
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

    from suite.threads import usable_cores

    cuda = torch.cuda.is_available()
    info = {
        "name": name or socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_git_version": getattr(torch.version, "git_version", None),
        "suite_commit": suite_commit(),
        "torchvision": _version("torchvision"),
        "torchaudio": _version("torchaudio"),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "gpu_driver": _gpu_driver() if cuda else None,
        "gpu_details": _gpu_details() if cuda else [],
        "arch": platform.machine(),
        # A container or taskset may allow fewer cores than "cores"; timings depend on these.
        "usable_cores": usable_cores(),
        "cpu_backends": _cpu_backends(),
        "collect_env": dict(_collect_env_summary()),
    }
    return info


def suite_commit() -> str | None:
    """The git commit of the torchsuite checkout running (with "-dirty" when it has uncommitted
    changes), or None when it is not run from a checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git binary, a broken checkout
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def _cpu_backends() -> dict:
    import torch

    return {
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
    }


def _gpu_details() -> list[dict]:
    import torch

    details = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        details.append({"name": props.name, "memory_bytes": props.total_memory,
                        "capability": f"{props.major}.{props.minor}",
                        "multiprocessors": props.multi_processor_count})
    return details


# The fields of torch.utils.collect_env that tell two stacks apart; the rest (pip and conda
# package lists) is long and mostly repeats the versions captured above.
_COLLECT_ENV_FIELDS = ("os", "libc_version", "gcc_version", "is_debug_build", "cuda_compiled_version",
                       "cuda_runtime_version", "cudnn_version", "nvidia_driver_version",
                       "nvidia_gpu_models", "hip_compiled_version", "caching_allocator_config",
                       "cpu_info")


@functools.cache
def _collect_env_summary() -> dict:
    """torch.utils.collect_env's fields, once a process: it shells out (pip, lscpu, nvidia-smi; 0.25 s
    on an idle 2-core VM, ten times that beside busy processes), and what it reports cannot change
    under a running interpreter. `bisect` and `ab` capture a machine every session."""
    try:
        from torch.utils import collect_env

        info = collect_env.get_env_info()
        return {field: getattr(info, field, None) for field in _COLLECT_ENV_FIELDS}
    except Exception as err:  # it shells out to lscpu, nvidia-smi...: a failure must not stop a run
        return {"error": f"{type(err).__name__}: {err}"}


def _gpu_driver() -> str | None:
    try:
        from torch.utils import collect_env

        return collect_env.get_nvidia_driver_version(collect_env.run)
    except Exception:  # collect_env's helpers are internal; a missing driver string is not fatal
        return None
