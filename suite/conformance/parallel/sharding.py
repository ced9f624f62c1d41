"""How one step's data reaches each rank, and what the single-process reference sees instead.

Data parallelism promises P(x) = 1/N sum_i f_i(x): N ranks, each on its own shard, averaging
gradients, train as one process on the union of the shards. Each scheme below says which
samples each rank takes at a step and which samples (and loss scale) make that union.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data.distributed import DistributedSampler

SCHEMES = ("shards", "uneven", "sampler")


@dataclass(frozen=True)
class Sharding:
    """scheme "shards": the batch in N contiguous equal shards, rank r takes shard r.
    scheme "uneven": shards, but rank r stops after max(1, steps - r) steps (Join context).
    scheme "sampler": DistributedSampler over the whole data set every step (one epoch a step),
    padded to equal shares. `accumulate` micro-batches per rank and step, all but the last
    under no_sync(), must make the same step as one large batch.
    """

    scheme: str = "shards"
    accumulate: int = 1

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown sharding scheme {self.scheme!r}; valid: {', '.join(SCHEMES)}")
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be at least 1, got {self.accumulate}")

    def validate(self, batch_len: int, world_size: int) -> None:
        if self.scheme == "sampler":
            share = -(-batch_len // world_size)
        elif batch_len % world_size:
            raise ValueError(f"a global batch of {batch_len} does not split into {world_size} "
                             "equal shards")
        else:
            share = batch_len // world_size
        if share % self.accumulate:
            raise ValueError(f"a shard of {share} does not split into {self.accumulate} "
                             "equal micro-batches")

    def steps_of_rank(self, rank: int, steps: int) -> int:
        return max(1, steps - rank) if self.scheme == "uneven" else steps

    def rank_indices(self, step: int, rank: int, world_size: int, batch_len: int) -> torch.Tensor:
        if self.scheme == "sampler":
            return _sampler_indices(step, rank, world_size, batch_len)
        shard = batch_len // world_size
        return torch.arange(rank * shard, (rank + 1) * shard)

    def micro_batches(self, step: int, rank: int, world_size: int, batch_len: int) -> list[torch.Tensor]:
        return list(self.rank_indices(step, rank, world_size, batch_len).chunk(self.accumulate))

    def reference(self, step: int, world_size: int, batch_len: int, steps: int
                  ) -> tuple[torch.Tensor, float]:
        """The samples the reference trains on at `step`, and the factor on its (mean) loss.

        Under Join, ranks that ran out contribute zero gradients but the average still divides
        by the initial world size, so the reference's mean loss is scaled by active/N.
        """
        active = [r for r in range(world_size) if step < self.steps_of_rank(r, steps)]
        indices = torch.cat([self.rank_indices(step, r, world_size, batch_len) for r in active])
        return indices, len(active) / world_size


def _sampler_indices(step: int, rank: int, world_size: int, dataset_len: int) -> torch.Tensor:
    sampler = DistributedSampler(range(dataset_len), num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=0, drop_last=False)
    sampler.set_epoch(step)
    return torch.tensor(list(sampler))
