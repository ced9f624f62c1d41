"""Summary statistics of timing samples: median, IQR and the `noisy` flag.

Kept free of torch so the flag logic can be checked on synthetic sample lists.
"""
from __future__ import annotations

import statistics

# The design's rule: a figure whose IQR is over 10% of its median is not to be trusted alone.
NOISY_IQR_FRACTION = 0.10


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th) percentiles, linearly interpolated as numpy's and torch's defaults are."""
    if not samples:
        raise ValueError("no samples to summarize")
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def summarize(samples: list[float], noisy_above: float = NOISY_IQR_FRACTION) -> dict:
    """median_s, iqr_s, iqr_fraction (IQR/median) and noisy (iqr_fraction over `noisy_above`)."""
    q1, median, q3 = quartiles(samples)
    iqr = q3 - q1
    fraction = iqr / median if median > 0 else float("inf")
    return {
        "median_s": median,
        "iqr_s": iqr,
        "iqr_fraction": fraction,
        "noisy": fraction > noisy_above,
    }
