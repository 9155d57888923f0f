"""Bootstrap intervals and the measurement window, on records and samples whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from llm_loadtest import intervals
from llm_loadtest.metrics import measurement_window, summarize
from tests.support.records import rec


def test_percentile_interval_covers_the_true_value_and_narrows_with_samples():
    rng = np.random.default_rng(7)
    small, large = rng.exponential(1.0, 50), rng.exponential(1.0, 2000)
    true_median = np.log(2)
    lo_s, hi_s = intervals.percentile_ci(small, 50)
    lo_l, hi_l = intervals.percentile_ci(large, 50)
    assert lo_l < true_median < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3  # 40x the samples: about a sixth of the width
    assert intervals.percentile_ci(large, 50) == (lo_l, hi_l)  # a fixed seed: the report renders the same twice


def test_too_few_samples_give_no_interval():
    assert intervals.percentile_ci([1.0, 2.0, 3.0, 4.0], 50) is None  # under MIN_SAMPLES
    assert intervals.percentile_ci(list(range(19)), 95) is None  # no sample beyond p95's rank
    assert intervals.percentile_ci(list(range(20)), 95) is not None
    assert intervals.percentile_ci(list(range(99)), 99) is None


def test_ratio_interval_is_bootstrapped_not_divided_bounds():
    rng = np.random.default_rng(3)
    a = rng.normal(10.0, 1.0, 200)
    b = rng.normal(20.0, 1.0, 200)
    low, high = intervals.ratio_ci(b, a)
    assert 1.8 < low < 2.0 < high < 2.2
    (a_lo, a_hi), (b_lo, b_hi) = intervals.percentile_ci(a, 50), intervals.percentile_ci(b, 50)
    assert high - low < b_hi / a_lo - b_lo / a_hi  # narrower than the ratio of the bounds
    same_lo, same_hi = intervals.ratio_ci(rng.normal(10.0, 1.0, 200), a)
    assert same_lo < 1 < same_hi


def test_fewer_decimals_for_a_wide_interval():
    assert intervals.fmt(773.04, (760.2, 781.5), most=1) == "773 (760–782)"
    assert intervals.fmt(0.2481, (0.2452, 0.2523)) == "0.248 (0.245–0.252)"
    assert intervals.fmt(2.0, None, most=2) == "2.00"


def test_window_leaves_out_the_ramp_and_the_drain():
    """4 users; the 4th starts at 1 s (the ramp); from 5 s they stop one by one (the drain)."""
    records = [rec(start=0, ttft=0.1, e2e=e, tokens=t) for e, t in ((5.0, 50), (6.0, 60), (7.0, 70))]
    records.append(rec(start=1.0, ttft=0.1, e2e=4.0, tokens=40))
    assert measurement_window(records, users=4) == (1.0, 5.0)
    s = summarize(records, target="t", api="tgi", users=4, max_new_tokens=16, wall_s=7.0)
    assert s.window_s == pytest.approx(4.0)
    # About 4 streams of ~10 tok/s in the window; over the whole wall (220 tokens in 7 s) the drain would halve it.
    assert s.output_tok_s == pytest.approx(40, rel=0.05) and 220 / 7 < 32
    assert s.output_tok_s_ci_low <= s.output_tok_s <= s.output_tok_s_ci_high
    assert s.tok_s_cv < 0.1
    assert s.ttft_p50_ci_low is None  # 4 requests: too few for an interval


def test_a_zero_slice_in_the_base_leaves_the_ratio_an_interval():
    """A throughput slice that holds a prefill's pause is 0: the base's mean is what must be positive."""
    base = [200, 210, 0, 190, 205, 195, 200, 210, 190, 200]
    ci = intervals.ratio_ci([2 * v for v in base], base, centre="mean")
    assert ci is not None and ci[0] <= 2.0 <= ci[1], ci
    assert intervals.ratio_ci([1, 2, 3, 4, 5], [0, 0, 0, 0, 0], centre="mean") is None
