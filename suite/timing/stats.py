"""Summary statistics of timing samples: median, IQR, the `noisy` rule and the median's interval.

Median, IQR and the noisy warning come from torch.utils.benchmark.Measurement, the object
Timer itself returns. The module imports torch only inside `summarize`, so that the report
(which applies the same `noisy` rule to other tools' files) does not need it.
"""
from __future__ import annotations

import math
import statistics

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


LATENCY_PERCENTILES = (50, 90, 99)


def latency_percentiles(samples: list[float]) -> dict:
    """latency_p50_s, latency_p90_s, latency_p99_s of one-call samples (nearest rank above)."""
    ordered = sorted(samples)
    return {f"latency_p{p}_s": ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]
            for p in LATENCY_PERCENTILES}


def log_variance(process_medians: list[float]) -> tuple[float, int] | None:
    """(variance, degrees of freedom) of the log medians of one figure's processes; None under two."""
    logs = [math.log(m) for m in process_medians if m > 0]
    if len(logs) < 2:
        return None
    mean = sum(logs) / len(logs)
    return sum((x - mean) ** 2 for x in logs) / (len(logs) - 1), len(logs) - 1


def typical_log_variance(figures: list[list[float]]) -> float | None:
    """The between-process variance of log medians that the run's figures share: the median of
    their own variances, each scaled by the median of its chi-squared distribution so that the
    median estimates the variance itself. A median, not a mean: one figure's bad process would
    otherwise widen every figure's interval (it widens its own, below)."""
    from scipy.stats import chi2

    scaled = [variance / (chi2.median(df) / df) for variance, df in filter(None, map(log_variance, figures))]
    return statistics.median(scaled) if scaled else None


def figure_log_sd(process_medians: list[float], typical: float | None) -> float | None:
    """A figure's between-process spread: the run's typical one, or its own where that is larger."""
    own = log_variance(process_medians)
    candidates = [v for v in (typical, own[0] if own else None) if v is not None]
    return math.sqrt(max(candidates)) if candidates else None


def t_quantile(probability: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(probability, df))


def between_process_interval(process_medians: list[float], log_sd: float | None, df: int,
                             confidence: float = 0.95) -> tuple[float, float] | None:
    """A t interval of the figure's typical process median (geometric mean of the processes'
    medians) with the between-process spread `log_sd` (figure_log_sd); None without one."""
    if log_sd is None or df < 1 or not process_medians:
        return None
    logs = [math.log(m) for m in process_medians]
    center = sum(logs) / len(logs)
    half = t_quantile(1 - (1 - confidence) / 2, df) * log_sd / math.sqrt(len(logs))
    return math.exp(center - half), math.exp(center + half)
