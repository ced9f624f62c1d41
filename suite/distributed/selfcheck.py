"""Small functions to send to a WorkerPool: the pool's own tests, and a quick health check.

They live in the package, not in tests/, so that a worker imports them by module name
whatever sys.path it started with.
"""
from __future__ import annotations

import os
import signal
import time


def rank_report(rank: int, world_size: int) -> dict:
    """What each rank sees, after an all-reduce proving the group works."""
    import torch
    import torch.distributed as dist

    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    return {"rank": rank, "world_size": world_size, "pid": os.getpid(),
            "rank_sum": total.item(), "threads": torch.get_num_threads()}


def kill_rank(rank: int, world_size: int, victim: int = 1) -> None:
    """The victim dies at once (SIGKILL: no cleanup); the others wait for it in a barrier."""
    import torch.distributed as dist

    if rank == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()


def hang_rank(rank: int, world_size: int, victim: int = 1, seconds: float = 3600.0) -> None:
    import torch.distributed as dist

    if rank == victim:
        time.sleep(seconds)
    dist.barrier()


def raise_on_rank(rank: int, world_size: int, victim: int = 1, others_answer_after: float = 0.0) -> None:
    """The victim raises at once; the other ranks answer normally, after a pause if asked."""
    if rank == victim:
        raise ValueError(f"rank {rank} was told to fail\nand this second line stays in the details")
    time.sleep(others_answer_after)
    return None


def scaled(rank: int, world_size: int, tensor):
    """The tensor it was sent, times (rank + 1): tensors travel both ways."""
    return tensor * (rank + 1)


def cuda_state(rank: int, world_size: int) -> dict:
    """Whether this worker inherited an initialised CUDA from the process it was forked from."""
    import torch

    return {"initialized": torch.cuda.is_initialized(), "bad_fork": torch.cuda._is_in_bad_fork()}


def switch_settings_off(rank: int, world_size: int) -> dict:
    """What a conformance check might do: TF32 off, deterministic kernels, another thread count."""
    import torch

    from suite.timing.settings import current_settings

    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(torch.get_num_threads() + 1)
    return current_settings()


def settings_now(rank: int, world_size: int) -> dict:
    from suite.timing.settings import current_settings

    return current_settings()


def check_collective_function(rank: int, world_size: int, case_name: str) -> dict:
    """check_function and the group-Jacobian blocks of one collective case of
    suite/cases/torch_functions.py, on this rank; every rank makes the same calls in order."""
    from suite.cases.torch_functions import CASES
    from suite.conformance.functions.check import check_function
    from suite.conformance.functions.collective import jacobian_blocks

    case = CASES.get(case_name)
    inputs = case.inputs(rank, world_size)
    return {"report": check_function(case.function, inputs, reference=case.reference),
            "blocks": jacobian_blocks(case.function, inputs, world_size)}
