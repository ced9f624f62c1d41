"""A canary for the machine's own speed: a fixed matmul timed just before and after each figure.

A VM's neighbours and the host's frequency scaling change the machine's speed with nothing of
ours running, and CPU-time accounting cannot see it. A fixed, few-millisecond workload can: when
it ran at a different speed after a figure than before it, the machine changed under the
figure. Its time is kept with the record, so two machines' figures can be read beside their
canaries.
"""
from __future__ import annotations

import torch

from suite.threads import torch_threads
from suite.timing.measure import make_clock

# A few milliseconds each: 768^3 is 0.9 GFLOP, about 5 ms on 2 cores at 90 GFLOP/s; 4096^3 in
# fp32 is about 3 ms on a datacenter GPU.
CANARY_SIZE = {"cpu": 768, "cuda": 4096}
CANARY_REPEATS = 5
# On this project's 2-core VM, with nothing else running, the canary (fastest of 5) moved by
# more than 10% between two readings 0.1 s apart 1 time in 6, by more than 15% 1 time in 11:
# the VM's speed jitters. A move beyond 15% says the machine changed under the figure.
DRIFT_FRACTION = 0.15

class Canary:
    def __init__(self, device: torch.device, threads: int):
        n = CANARY_SIZE[device.type]
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device)
        self.b = torch.randn(n, n, generator=g).to(device)
        self.threads = threads
        self.clock = make_clock([device])
        self.time()  # warm-up: thread pool, BLAS handles

    def time(self) -> float:
        """Seconds of the fastest of CANARY_REPEATS matmuls: the fastest is the least disturbed."""
        best = float("inf")
        with torch_threads(self.threads):
            for _ in range(CANARY_REPEATS):
                start = self.clock()
                torch.mm(self.a, self.b)
                best = min(best, self.clock() - start)
        return best

def drifted(before_s: float, after_s: float) -> bool:
    return abs(after_s / before_s - 1) > DRIFT_FRACTION

