"""Peak memory of a timed run: the CUDA allocator's peak on GPUs, the process peak RSS on CPU."""
from __future__ import annotations

import resource
import sys

import torch


def reset_peak(devices: list[torch.device]) -> None:
    """Start the CUDA allocators' peaks from what is allocated now (model, batch)."""
    for device in devices:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(devices: list[torch.device]) -> tuple[int, str]:
    """(bytes, what they are).

    On GPUs: the largest per-device allocator peak, the figure that decides whether a batch
    fits. On CPU there is no allocator peak to reset, so this is the process's high-water mark
    since it started (getrusage), which includes whatever ran earlier in the process.
    """
    cuda = [d for d in devices if d.type == "cuda"]
    if cuda:
        return max(torch.cuda.max_memory_allocated(d) for d in cuda), "cuda_allocator_peak"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return (maxrss if sys.platform == "darwin" else maxrss * 1024), "process_peak_rss"
