"""The gradient of a collective Function (its forward communicates across a process group)
against finite differences of the whole group's computation.

A collective's backward differentiates the sum of every rank's loss, the convention of
torch.distributed.nn (pytorch/pytorch#58005): rank s's gradient is sum_r J[r][s]^T u_r, where
J[r][s] = d(rank r's outputs)/d(rank s's input) and u_r is rank r's cotangent. check_function
run on every rank at once cannot see that: gradcheck perturbs every rank's input together and
gives every rank the same cotangents, so its numbers are sum_s J[r][s] against
sum_s J[s][r]^T, equal only when the blocks are symmetric in that way, as for all_reduce's sum.
Here one rank moves at a time, which builds the group's whole Jacobian block by block:
- finite differences: rank s alone perturbed gives J[r][s] on every rank r;
- backward: rank r alone with a one-hot cotangent (the others zero) gives J[r][s] on every rank s.

`jacobian_blocks` runs on every rank of the group (the same calls in the same order);
`compare_blocks` runs wherever the ranks' blocks are gathered (the caller of a worker pool).
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from suite.conformance.autograd.gradcheck import GRADCHECK_TOLERANCES
from suite.conformance.autograd.jacobians import (central_difference_jacobian, differentiable_positions,
                                                  float_outputs)
from suite.conformance.closeness import mismatch
from suite.conformance.functions.checks import as_float64
from suite.conformance.result import CheckResult, run_check


def jacobian_blocks(fn: type[Function], inputs: tuple, world_size: int) -> dict[str, list[torch.Tensor]]:
    """This rank's blocks: "numerical"[s] = d(my outputs)/d(rank s's input) by central differences,
    "backward"[r] = d(rank r's outputs)/d(my input) by backward. Every rank must call this."""
    import torch.distributed as dist

    rank, eps = dist.get_rank(), GRADCHECK_TOLERANCES["eps"]
    args = as_float64(inputs)
    positions = differentiable_positions(args)
    if len(positions) != 1:
        raise ValueError(f"{fn.__name__}: one differentiable tensor argument expected, got positions {positions}")
    position, x = positions[0], args[positions[0]].detach()

    def flat_outputs(local):
        called = fn.apply(*[local if i == position else a for i, a in enumerate(args)])
        return torch.cat([o.reshape(-1) for o in float_outputs(called)])

    def moved_on(source):
        # Only the source rank moves; every rank still makes the same calls, in the same order.
        return lambda moved: flat_outputs(moved if rank == source else x.clone())

    numerical = [central_difference_jacobian(moved_on(source), x, eps) for source in range(world_size)]
    with torch.no_grad():
        sizes = [None] * world_size
        dist.all_gather_object(sizes, flat_outputs(x).numel())

    backward = []
    for target in range(world_size):
        rows = []
        for i in range(sizes[target]):
            leaf = x.clone().requires_grad_()
            out = flat_outputs(leaf)
            cotangent = torch.zeros_like(out)
            if rank == target:  # only the target rank's output has a loss
                cotangent[i] = 1
            (grad,) = torch.autograd.grad(out, leaf, cotangent, allow_unused=True)
            rows.append(torch.zeros(x.numel(), dtype=x.dtype) if grad is None else grad.reshape(-1))
        backward.append(torch.stack(rows))
    return {"numerical": numerical, "backward": backward}


def compare_blocks(per_rank: list[dict[str, list[torch.Tensor]]]) -> CheckResult:
    """`group_gradcheck`: every block of the group's Jacobian, backward against finite
    differences, at gradcheck's tolerances (atol 1e-5, rtol 1e-3)."""
    def body():
        world_size = len(per_rank)
        for r in range(world_size):
            for s in range(world_size):
                why = mismatch(per_rank[s]["backward"][r], per_rank[r]["numerical"][s],
                               rtol=GRADCHECK_TOLERANCES["rtol"], atol=GRADCHECK_TOLERANCES["atol"])
                if why:
                    return "fail", f"d(rank {r}'s outputs)/d(rank {s}'s input): {why}"
        return "pass", (f"the whole Jacobian of {world_size} ranks: backward equals finite differences "
                        "taken one rank at a time")
    return run_check("group_gradcheck", body)
