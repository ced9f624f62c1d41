"""Summary statistics of timing samples: median, IQR, the `noisy` rule and the median's interval.

Median, IQR and the noisy warning come from torch.utils.benchmark.Measurement, the object
Timer itself returns. The module imports torch only inside `summarize`, so that the report
(which applies the same `noisy` rule to other tools' files) does not need it.
"""
from __future__ import annotations

import math

# A figure whose IQR is 10% of its median or more is not to be trusted alone: the threshold of
# Measurement's own warning ("This could indicate system fluctuation").
NOISY_IQR_FRACTION = 0.10
# A distribution-free 95% interval of the median needs at least this many samples: with 5,
# even (min, max) covers the median only 1 - 2 * 0.5**5 = 94% of the time.
MIN_SAMPLES_FOR_INTERVAL = 6


def is_noisy(iqr: float, median: float) -> bool:
    """The one `noisy` rule, Measurement.meets_confidence's negation: IQR / median of at least
    NOISY_IQR_FRACTION (for files whose figures no Measurement summarised)."""
    return not median > 0 or not iqr / median < NOISY_IQR_FRACTION


def median_interval(samples: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval of the median from order statistics, or None (too few samples).

    The number of samples below the true median is Binomial(n, 1/2); the interval runs from the
    j-th to the (n+1-j)-th smallest sample, j the largest rank that keeps the coverage at least
    `confidence`. No assumption about the shape of the timing distribution (which is skewed).
    """
    n = len(samples)
    if n < MIN_SAMPLES_FOR_INTERVAL:
        return None
    ordered = sorted(samples)
    tail = (1 - confidence) / 2
    below, j = 0.0, 0  # below = P(Binomial(n, 1/2) < j)
    while True:
        next_below = below + math.comb(n, j) / 2 ** n
        if next_below > tail:
            break
        below, j = next_below, j + 1
    j = max(j, 1)
    return ordered[j - 1], ordered[n - j]


def summarize(samples: list[float]) -> dict:
    """median_s, iqr_s, iqr_fraction, noisy, and the 95% interval of the median with its half-width.

    ci_half_width_fraction is half the interval's width over the median: the precision of the
    figure, which full runs keep sampling to bring under 2%.
    """
    from torch.utils.benchmark import Measurement, TaskSpec

    if not samples:
        raise ValueError("no samples to summarize")
    measurement = Measurement(number_per_run=1, raw_times=list(samples), task_spec=TaskSpec("", ""))
    median, iqr = measurement.median, measurement.iqr
    interval = median_interval(samples)
    return {
        "median_s": median,
        "iqr_s": iqr,
        "iqr_fraction": iqr / median if median > 0 else float("inf"),
        "noisy": not median > 0 or not measurement.meets_confidence(NOISY_IQR_FRACTION),
        "ci95_low_s": interval[0] if interval else None,
        "ci95_high_s": interval[1] if interval else None,
        "ci_half_width_fraction": (interval[1] - interval[0]) / 2 / median if interval and median > 0 else None,
    }


def log_deviations(process_medians: list[float]) -> tuple[float, int]:
    """(sum of squared deviations of log medians from their mean, degrees of freedom) of one
    figure's processes: its share of the run's pooled between-process variance."""
    logs = [math.log(m) for m in process_medians if m > 0]
    if len(logs) < 2:
        return 0.0, 0
    mean = sum(logs) / len(logs)
    return sum((x - mean) ** 2 for x in logs), len(logs) - 1


def pooled_log_sd(figures: list[list[float]]) -> tuple[float | None, int]:
    """(sd, df): the between-process standard deviation of log medians, pooled over figures.

    Two to four processes a figure say little about its own spread (one degree of freedom with
    two); the machine's process-to-process variance is much the same for every figure of a run,
    so the run's figures share one estimate with the degrees of freedom of all of them.
    """
    total, df = 0.0, 0
    for medians in figures:
        squares, own_df = log_deviations(medians)
        total, df = total + squares, df + own_df
    return (math.sqrt(total / df), df) if df else (None, 0)


def t_quantile(probability: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(probability, df))


def between_process_interval(process_medians: list[float], log_sd: float | None, df: int,
                             confidence: float = 0.95) -> tuple[float, float] | None:
    """A t interval of the figure's typical process median (geometric mean of the processes'
    medians) with the run's pooled between-process spread; None without a spread estimate."""
    if log_sd is None or df < 1 or not process_medians:
        return None
    logs = [math.log(m) for m in process_medians]
    center = sum(logs) / len(logs)
    half = t_quantile(1 - (1 - confidence) / 2, df) * log_sd / math.sqrt(len(logs))
    return math.exp(center - half), math.exp(center + half)
