"""Summary statistics of timing samples: median, IQR, the `noisy` rule and the median's interval.

Median, IQR and the noisy warning come from torch.utils.benchmark.Measurement, the object
Timer itself returns. The module imports torch only inside `summarize`, so that the report
(which applies the same `noisy` rule to other tools' files) does not need it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

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


# How many processes a side an estimate may ask for before "more processes" stops being advice.
MAX_PROCESSES_TO_DECIDE = 400


@dataclass(frozen=True)
class LogRatio:
    """An estimate of log(new / base) for one figure: the difference of mean log process medians
    (or the mean of paired rounds' log ratios), its standard error from `n` processes a side, and
    the t distribution's degrees of freedom. `unit_sd` is the standard error at one process a
    side (standard_error * sqrt(n)): what more processes divide."""

    difference: float
    standard_error: float
    df: int
    n: int

    @property
    def unit_sd(self) -> float:
        return self.standard_error * math.sqrt(self.n)

    def p_values(self) -> tuple[float, float]:
        """(p that new is no slower, p that new is no faster): one-sided t tests."""
        from scipy.stats import t

        statistic = self.difference / self.standard_error
        return float(t.sf(statistic, self.df)), float(t.cdf(statistic, self.df))

    def interval(self, confidence: float) -> tuple[float, float]:
        """The ratio's two-sided interval at `confidence`."""
        half = t_quantile(1 - (1 - confidence) / 2, self.df) * self.standard_error
        return math.exp(self.difference - half), math.exp(self.difference + half)

    def processes_to_decide(self, margin: float, significance: float, confidence: float) -> int | None:
        """Processes a side at which this estimate, with the spread it has now, would be decided:
        significant beyond `margin` (regressed or improved), or its interval at `confidence` inside
        [1/margin, margin] (unchanged). None when no count up to MAX_PROCESSES_TO_DECIDE would (the estimate
        sits on the margin)."""
        edge, size = math.log(margin), abs(self.difference)
        extra_df = self.df - (self.n - 1)  # two unpaired sides have more degrees of freedom than n - 1
        for n in range(self.n, MAX_PROCESSES_TO_DECIDE + 1):
            standard_error, df = self.unit_sd / math.sqrt(n), n - 1 + extra_df
            beyond = size > edge and t_quantile(1 - significance, df) * standard_error < size
            within = size < edge and t_quantile(1 - (1 - confidence) / 2, df) * standard_error < edge - size
            if beyond or within:
                return n
        return None


# The share of an interleaved session's rounds trimmed from each end before its rounds are
# averaged: on a VM with a busy neighbour one process in ten ran at half speed, unflagged, and
# one such round moves a plain mean by 5%.
PAIRED_TRIM = 0.2


def paired_log_ratio(log_ratios: list[float], trim: float = PAIRED_TRIM) -> LogRatio | None:
    """The estimate from an interleaved session's rounds, each one log(new / base) of the two
    processes the round ran back to back: the machine's moment, shared by both, cancels. Yuen's
    trimmed mean: the `trim` share of rounds at each end left out of the mean, its standard
    error from the winsorized variance, n - 2g - 1 degrees of freedom (g rounds trimmed a side;
    under five rounds none are, and it is Student's paired t). None under two rounds or
    without spread."""
    n = len(log_ratios)
    g = int(trim * n)
    kept = n - 2 * g
    if kept < 2:
        return None
    ordered = sorted(log_ratios)
    winsorized = [min(max(x, ordered[g]), ordered[n - g - 1]) for x in ordered]
    spread = statistics.variance(winsorized)
    if not spread > 0:
        return None
    standard_error = math.sqrt((n - 1) * spread / (kept * (kept - 1)))
    return LogRatio(statistics.fmean(ordered[g:n - g]), standard_error, kept - 1, n)
