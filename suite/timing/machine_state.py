"""The machine's state as a figure or a run sees it: load, CPU frequency, memory, GPU clocks.

Read at the start and end of every run (`snapshot`), and around every figure for throttling
(`throttle_counters`). Every reading is best effort: a file or library that is absent gives
None, never an error, since the same code runs on laptops, VMs and servers.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

# NVML clock-event reasons that mean the GPU slowed down for power or heat (not idleness or
# an application clock setting): SW power cap, HW slowdown, SW thermal, HW thermal, HW power brake.
GPU_THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_frequency_mhz() -> float | None:
    values = [_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")]
    khz = [int(v) for v in values if v and v.isdigit()]
    return sum(khz) / len(khz) / 1000 if khz else None


def _memory_available_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cpu_thermal_throttles() -> int | None:
    counts = [_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle/core_throttle_count")]
    numbers = [int(c) for c in counts if c and c.isdigit()]
    return sum(numbers) if numbers else None


def _nvml():
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # not installed, no driver: no GPU readings
        return None


def _gpu_state(nvml, index: int) -> dict:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def read(name, *args):
        try:
            return getattr(nvml, name)(handle, *args)
        except Exception:  # an older driver or library without this call
            return None

    reasons = read("nvmlDeviceGetCurrentClocksEventReasons") or read("nvmlDeviceGetCurrentClocksThrottleReasons")
    power = read("nvmlDeviceGetPowerUsage")
    return {"index": index,
            "sm_clock_mhz": read("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_SM),
            "max_sm_clock_mhz": read("nvmlDeviceGetMaxClockInfo", nvml.NVML_CLOCK_SM),
            "temperature_c": read("nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU),
            "power_w": power / 1000 if power is not None else None,
            "clock_event_reasons": reasons,
            "throttled": bool(reasons & GPU_THROTTLE_MASK) if reasons is not None else None}


def gpu_states(indices: list[int] | None = None) -> list[dict]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        indices = range(nvml.nvmlDeviceGetCount()) if indices is None else indices
        return [_gpu_state(nvml, i) for i in indices]
    except Exception:
        return []


def snapshot() -> dict:
    """Load average, CPU governor and frequency, free memory, and each GPU's clocks and limits."""
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    return {"load_average": load,
            "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "cpu_frequency_mhz": _cpu_frequency_mhz(),
            "memory_available_bytes": _memory_available_bytes(),
            "cpu_thermal_throttle_count": _cpu_thermal_throttles(),
            "gpus": gpu_states()}


def throttle_counters(gpu_indices: list[int]) -> dict:
    return {"cpu": _cpu_thermal_throttles(), "gpus": gpu_states(gpu_indices) if gpu_indices else []}


def throttled_between(before: dict, after: dict) -> bool:
    """The CPU throttled for heat during the figure, or a GPU is held back by power or heat."""
    if before["cpu"] is not None and after["cpu"] is not None and after["cpu"] > before["cpu"]:
        return True
    return any(gpu.get("throttled") for gpu in after["gpus"])
