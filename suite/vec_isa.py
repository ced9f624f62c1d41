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

VEC_ISA_ENV = "TORCHINDUCTOR_VEC_ISA_OK"


def share_vec_isa_probe() -> bool:
    """Run inductor's check here, its sets in parallel, and let child processes skip it.

    The check's results land in inductor's own in-process cache, so this process's compiles do
    not check again. When every set the CPU claims passed, TORCHINDUCTOR_VEC_ISA_OK=1 goes into
    this process's environment, which children inherit: inductor then trusts the CPU's claims
    without building (its extra AVX512-bf16 and AMX checks still run). When one failed, nothing
    is set and each process checks for itself, as it would anyway. True when children skip it."""
    if os.environ.get(VEC_ISA_ENV) is not None:
        return os.environ[VEC_ISA_ENV] == "1"
    if platform.machine() not in ("x86_64", "AMD64"):
        return False  # one set to check there: nothing to share
    from concurrent.futures import ThreadPoolExecutor

    from torch._inductor import cpu_vec_isa

    flags = cpu_vec_isa.x86_isa_checker()
    claimed = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(flag in flags for flag in str(isa).split())]
    if not claimed:
        return False
    # Each check is a compiler and an interpreter: threads overlap them (19 s to 12 s, cold, 2 cores).
    with ThreadPoolExecutor(len(claimed)) as pool:
        passed = list(pool.map(bool, claimed))
    if not all(passed):
        return False
    os.environ[VEC_ISA_ENV] = "1"
    return True
