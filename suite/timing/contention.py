"""What a timing can see of the rest of the machine: other processes on its cores, steal, quota.

OpenMP threads that lose a core to another process stall at every barrier; all samples are then
equally slow, so a tight IQR does not reveal it. The kernel does: /proc/stat counts the time
every CPU spent busy (steal included: a hypervisor running another guest), and /proc/self/stat
this process's share. Busy time on this process's CPUs that is not its own is somebody else's.
A cgroup CPU quota shows as `throttled_usec` instead. On systems without /proc the watch sees
nothing and reports None: a figure is then neither called contended nor clean by this rule.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from suite.threads import usable_cores, usable_cpus

# Other processes may use this much of a core on top of the cores the timing leaves free
# (system daemons, jiffy rounding over a short window) before the figure is called contended.
CONTENDED_MARGIN_CORES = 0.25
QUIET_WINDOW_S = 0.2

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_PROC_STAT = Path("/proc/stat")
_CGROUP_CPU_STAT = Path("/sys/fs/cgroup/cpu.stat")


@dataclass(frozen=True)
class Counters:
    wall_s: float
    busy_s: float | None  # every process's busy time on our CPUs, steal included
    steal_s: float | None
    own_s: float  # this process's CPU time, all threads
    throttled_s: float | None  # cgroup v2 quota throttling


def _proc_stat(cpus: set[int]) -> tuple[float, float] | tuple[None, None]:
    """(busy, steal) seconds summed over `cpus`, from the per-CPU lines of /proc/stat."""
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        return None, None
    busy = steal = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(v) for v in rest.split()[:8])
        busy += user + nice + system + irq + softirq + stolen
        steal += stolen
    return busy * _TICK_S, steal * _TICK_S


def _own_cpu_s() -> float:
    # /proc/self/stat counts in the same ticks as /proc/stat, so their difference is fair; the
    # portable fallback is exact but ticks differently.
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime
    except (OSError, IndexError, ValueError):
        return time.process_time()


def _throttled_s() -> float | None:
    try:
        for line in _CGROUP_CPU_STAT.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        pass
    return None


def read_counters(cpus: set[int] | None = None) -> Counters:
    busy, steal = _proc_stat(cpus if cpus is not None else usable_cpus())
    return Counters(time.monotonic(), busy, steal, _own_cpu_s(), _throttled_s())


@dataclass(frozen=True)
class Load:
    """Between two Counters: how many cores others used, steal, quota throttling, our own use."""

    wall_s: float
    others_cores: float | None
    steal_cores: float | None
    own_cores: float
    throttled_s: float | None

    def to_dict(self) -> dict:
        return {"wall_s": self.wall_s, "others_cores": self.others_cores,
                "steal_cores": self.steal_cores, "own_cores": self.own_cores,
                "throttled_s": self.throttled_s}


def load_between(before: Counters, after: Counters) -> Load:
    wall = max(after.wall_s - before.wall_s, 1e-9)
    own = after.own_s - before.own_s
    others = steal = throttled = None
    if before.busy_s is not None and after.busy_s is not None:
        others = max(0.0, (after.busy_s - before.busy_s - own) / wall)
        steal = (after.steal_s - before.steal_s) / wall
    if before.throttled_s is not None and after.throttled_s is not None:
        throttled = after.throttled_s - before.throttled_s
    return Load(wall, others, steal, own / wall, throttled)


def is_contended(load: Load, cores_needed: float, peers_cores: float = 0.0,
                 cores: int | None = None) -> bool | None:
    """Whether others took cores the timing needs; None when nothing could be read.

    cores_needed: cores the whole timing uses (threads, times ranks for DDP). peers_cores: the
    part of that which runs in other processes (the other DDP ranks), expected among `others`.
    """
    if load.throttled_s:
        return True
    if load.others_cores is None:
        return None
    cores = cores or usable_cores()
    spare = max(0.0, cores - cores_needed)
    return load.others_cores - peers_cores > spare + CONTENDED_MARGIN_CORES


def wait_for_quiet(cores_needed: float, budget_s: float, peers_cores: float = 0.0) -> bool:
    """Sleep in short windows until one shows no contention, or `budget_s` has passed.

    True when a quiet window was seen (or nothing can be read); peers must be idle meanwhile.
    """
    deadline = time.monotonic() + budget_s
    while True:
        before = read_counters()
        time.sleep(QUIET_WINDOW_S)
        contended = is_contended(load_between(before, read_counters()), cores_needed, peers_cores)
        if not contended:
            return True
        if time.monotonic() >= deadline:
            return False
