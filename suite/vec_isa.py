"""Inductor's check of the CPU's vector instruction sets, paid once a run instead of once a process.

Before its first CPU kernel, inductor builds a test program per instruction set the CPU claims
and loads each in a fresh interpreter that imports torch (torch._inductor.cpu_vec_isa), one
after the other: measured on a 2-core VM, a process's first compile of a small MLP took 25 s
with a cold cache and 12 s without the check. The answer is the machine's, the same in every
process, and inductor takes it from TORCHINDUCTOR_VEC_ISA_OK when that is set.
"""
from __future__ import annotations

import os
import platform
import threading
from typing import Callable

VEC_ISA_ENV = "TORCHINDUCTOR_VEC_ISA_OK"


def share_vec_isa_probe() -> bool:
    """Run inductor's check here, before any compile is timed, and let child processes skip it.

    On x86 the sets are checked in parallel threads; when every set the CPU claims passed,
    TORCHINDUCTOR_VEC_ISA_OK=1 goes into this process's environment, which children inherit:
    inductor then trusts the CPU's claims without building (its extra AVX512-bf16 and AMX checks
    still run). Either way this process's answer lands in inductor's own cache, so no compile
    time measured after this includes the check. When a set fails, nothing is set and each
    process checks for itself; when the check itself raises (no C++ compiler, say), inductor's
    own compile will say so. True when children skip the check."""
    try:
        from torch._inductor import cpu_vec_isa

        if os.environ.get(VEC_ISA_ENV) is None and platform.machine() in ("x86_64", "AMD64"):
            from concurrent.futures import ThreadPoolExecutor

            flags = cpu_vec_isa.x86_isa_checker()
            claimed = [isa for isa in cpu_vec_isa.supported_vec_isa_list
                       if all(flag in flags for flag in str(isa).split())]
            # Each check is a compiler and an interpreter: threads overlap them (19 s to 12 s, cold, 2 cores).
            with ThreadPoolExecutor(max(len(claimed), 1)) as pool:
                if claimed and all(pool.map(bool, claimed)):
                    os.environ[VEC_ISA_ENV] = "1"
        cpu_vec_isa.valid_vec_isa_list()  # the rest of this process's check (bf16, AMX, other arches)
    except Exception:  # noqa: BLE001 - the compile that follows raises what is wrong, in its own words
        return False
    return os.environ.get(VEC_ISA_ENV) == "1"


def start_vec_isa_probe() -> Callable[[], None]:
    """share_vec_isa_probe on a thread, started now; returns what waits for it to end. Nearly all
    of its seconds are spent waiting on compilers and interpreters, so it overlaps work that only
    judges values (a run's conformance checks, a test session's first tests)."""
    thread = threading.Thread(target=share_vec_isa_probe, name="torchsuite-vec-isa", daemon=True)
    thread.start()
    return thread.join
