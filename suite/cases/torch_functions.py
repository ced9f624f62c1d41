"""Custom Functions that PyTorch itself ships, with samples written here, for check_function.

- `torch.utils.checkpoint.CheckpointFunction`: the reentrant gradient checkpoint;
- `torch.nn.parallel._functions.Broadcast`, `Gather`, `Scatter`: DataParallel's copies between
  GPUs, which refuse CPU tensors ("not implemented for CPU tensors"): they need CUDA;
- `torch.distributed.nn.functional`'s autograd-aware collectives: all_reduce, all_gather,
  broadcast, on every rank of a process group at once.

A case that must fail names the checks and why (`expect`): a limitation of the Function
or of checking it one process at a time (docs/autograd-and-functions.md), or a defect the suite
found (docs/found.md).
tests/test_torch_functions.py runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch.autograd import Function
from torch.distributed.nn.functional import _AllGather, _AllReduce, _Broadcast
from torch.nn.parallel._functions import Broadcast, Gather, Scatter
from torch.utils.checkpoint import CheckpointFunction

from suite.cases.expect import Expect, fails
from suite.cases.registry import Registry
from suite.cases.samples import randn, seeded

ON_ONE_PROCESS, ON_CUDA, ON_A_GROUP = "one process", "cuda", "process group"
GROUP_SIZE = 2  # ranks of the group the collectives run on

REFUSES_GRAD = ("reentrant checkpoint refuses torch.autograd.grad, which these checks use, by design "
                "(\"only supports torch.autograd.backward without its inputs argument\", its docs)")
LOCKSTEP = ("every rank perturbs its input at once and uses the same cotangents, so gradcheck compares "
            "sum_s J[r][s] with sum_s J[s][r]: not the same for all_gather or broadcast; group_gradcheck "
            "checks their gradient one rank at a time")
ZERO_GRADIENT_COMPILED = ("a defect found here (docs/found.md): under torch.compile (aot_eager, fullgraph) its "
                          "gradient comes back zero on every rank, where eager's is the sum of the ranks' cotangents")


@dataclass(frozen=True)
class TorchFunctionCase:
    name: str
    function: type[Function]
    inputs: Callable[..., tuple]  # () -> forward's arguments; (rank, world_size) for a process group
    feature: str
    needs: str = ON_ONE_PROCESS  # ON_ONE_PROCESS, ON_CUDA or ON_A_GROUP
    reference: Callable | None = None
    expect: tuple[Expect, ...] = ()  # exactly the checks that must fail, and why
    kind: str = "torch_function"

    def describe(self) -> str:
        return f"{self.function.__module__}.{self.function.__name__}: {self.feature}"


CASES: Registry[TorchFunctionCase] = Registry("torch_function")


def case(*args, **kwargs) -> TorchFunctionCase:
    return CASES.add(TorchFunctionCase(*args, **kwargs))


def tanh_layer(x, weight):
    """The checkpointed block: small, twice differentiable, two tensor arguments."""
    return torch.tanh(x @ weight)


def _on_cuda(*tensors):
    return tuple(t.detach().cuda().requires_grad_() for t in tensors)


case("checkpoint_reentrant", CheckpointFunction,
     lambda: (tanh_layer, False, randn(seeded(50), 3, 4), randn(seeded(51), 4, 2)),
     "torch.utils.checkpoint(use_reentrant=True): recomputes the block in backward",
     reference=lambda run_function, preserve_rng_state, x, weight: run_function(x, weight),
     expect=(fails("gradcheck", "gradgradcheck", "reentrant", "needs_input_grad", "reference_grad",
                   "reference_gradgrad", why=REFUSES_GRAD),))

case("dataparallel_broadcast", Broadcast, lambda: ([0], *_on_cuda(randn(seeded(52), 3, 4), randn(seeded(53), 2))),
     "copies tensors to each GPU; backward sums the copies' gradients", ON_CUDA,
     reference=lambda devices, *tensors: tensors)
case("dataparallel_gather", Gather, lambda: (0, 0, *_on_cuda(randn(seeded(54), 2, 3), randn(seeded(55), 1, 3))),
     "concatenates the replicas' outputs on one device; backward scatters the gradient", ON_CUDA,
     reference=lambda device, dim, *tensors: torch.cat(tensors, dim))
case("dataparallel_scatter", Scatter, lambda: ([0], None, 0, randn(seeded(56), 4, 3)),
     "splits a CPU batch across GPUs; backward gathers the gradient back to the CPU", ON_CUDA,
     reference=lambda devices, chunk_sizes, dim, x: (x,))

case("all_reduce", _AllReduce,
     lambda rank, world_size: (dist.ReduceOp.SUM, dist.group.WORLD, randn(seeded(60 + rank), 3)),
     "torch.distributed.nn.functional.all_reduce (sum): backward all-reduces the gradient", ON_A_GROUP,
     expect=(fails("compile", why=ZERO_GRADIENT_COMPILED),))
case("all_gather", _AllGather, lambda rank, world_size: (dist.group.WORLD, randn(seeded(62 + rank), 3)),
     "torch.distributed.nn.functional.all_gather: backward sums each rank's slice across ranks", ON_A_GROUP,
     expect=(fails("gradcheck", "gradgradcheck", why=LOCKSTEP),))
case("broadcast", _Broadcast, lambda rank, world_size: (0, dist.group.WORLD, randn(seeded(64 + rank), 3)),
     "torch.distributed.nn.functional.broadcast from rank 0: backward reduces the gradient to it", ON_A_GROUP,
     expect=(fails("gradcheck", "gradgradcheck", why=LOCKSTEP),))
