"""A noisy neighbour for measuring the A/B gate: N busy processes (default 2) that each spin for
0.5-6 s and rest for 0.5-6 s at random (busy 60% of the time), as a shared VM's other tenants do.

    python scripts/noisy_neighbour.py [N] [SECONDS] &   # then torchsuite ab ...; kill %1

docs/compare.md's measured sessions ran beside it.
"""
import multiprocessing
import os
import random
import sys
import time


def spin(seed: int, parent: int) -> None:
    rng = random.Random(seed)
    while os.getppid() == parent:  # not a moment longer than the neighbour itself (a kill leaves no orphans)
        end = time.monotonic() + rng.uniform(0.5, 6)
        if rng.random() < 0.6:
            while time.monotonic() < end:
                pass
        else:
            time.sleep(max(0.0, end - time.monotonic()))


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
    for index in range(count):
        multiprocessing.Process(target=spin, args=(index, os.getpid()), daemon=True).start()
    time.sleep(seconds)
