"""95 % bootstrap confidence intervals: of a step's percentiles and throughput, and of the ratio of two steps'.

scipy.stats.bootstrap, percentile method, with a fixed seed so that a report renders the same figures twice. A
percentile's interval needs MIN_SAMPLES values and at least one beyond the percentile's rank (p95: 20, p99: 100):
with fewer, the resamples cannot reach past the largest value and the interval would look tighter than it is.

scipy is imported when an interval is computed, not with this module: Locust's processes import the metrics
without needing it, and gpu-check's offline GPU machine goes without it (34 MB of the 64 MiB it can carry): there,
every interval is None, and `llm-loadtest report DIR` where scipy is installed computes them from the records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0
MIN_SAMPLES = 5

Interval = tuple[float, float]
Statistic = Callable[..., np.ndarray]


def enough(n: int, q: float = 50) -> bool:
    return n >= MIN_SAMPLES and n * (1 - q / 100) >= 1


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Statistic) -> Interval | None:
    try:
        from scipy import stats
    except ImportError:
        return None
    res = stats.bootstrap(
        samples,
        statistic,
        paired=False,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return None if math.isnan(low) or math.isnan(high) else (low, high)


def percentile_ci(values: Sequence[float], q: float) -> Interval | None:
    if not enough(len(values), q):
        return None
    return _bootstrap((np.asarray(values, dtype=float),), lambda x, axis: np.percentile(x, q, axis=axis))


def mean_ci(values: Sequence[float]) -> Interval | None:
    if not enough(len(values)):
        return None
    return _bootstrap((np.asarray(values, dtype=float),), lambda x, axis: np.mean(x, axis=axis))


def ratio_ci(b: Sequence[float], a: Sequence[float], centre: str = "median") -> Interval | None:
    """The interval of centre(b) / centre(a), the ratio itself bootstrapped from two independent samples (the
    ratio of two intervals' bounds is no interval of the ratio)."""
    if not (enough(len(a)) and enough(len(b))):
        return None
    f = np.median if centre == "median" else np.mean
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    # The denominator's centre must be positive, not each sample: a throughput slice holding a prefill's pause is
    # legitimately 0. A resample whose centre is 0 gives inf, which the percentile bounds tolerate or report.
    if f(a_arr) <= 0 or np.any(a_arr < 0):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return _bootstrap((b_arr, a_arr), lambda y, x, axis: f(y, axis=axis) / f(x, axis=axis))


def decimals(low: float | None, high: float | None, most: int) -> int:
    """Two significant digits of the interval's width, at most `most`: a wide interval gets fewer decimals."""
    if low is None or high is None or high <= low:
        return most
    return max(0, min(most, 1 - math.floor(math.log10(high - low))))


def fmt(value: float | None, ci: Interval | None, most: int = 3, scale: float = 1.0) -> str:
    """`value (low–high)`, with as many decimals as the interval's width supports."""
    if value is None:
        return "-"
    if ci is None or ci[1] <= ci[0]:  # none, or every resample alike (e.g. a target that generated nothing)
        return f"{value * scale:.{most}f}"
    low, high = ci[0] * scale, ci[1] * scale
    d = decimals(low, high, most)
    return f"{value * scale:.{d}f} ({low:.{d}f}–{high:.{d}f})"
