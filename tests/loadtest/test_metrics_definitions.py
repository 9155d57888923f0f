"""The metric definitions, on records whose right answers are known by hand."""

from __future__ import annotations

import pytest

from llm_loadtest.metrics import SLO, summarize
from tests.support.records import rec


def test_throughput_latency_and_errors():
    records = [
        rec(start=0, e2e=1.0, tokens=10),
        rec(start=0, e2e=2.0, ttft=0.5, tokens=20, server=20),
        rec(status="timeout", start=1, e2e=1.0, tokens=3, server=None),
        rec(status="stream_error", start=1.5, e2e=0.5, tokens=1, server=None),
    ]
    s = summarize(records, target="t", api="tgi", users=2, max_new_tokens=16, wall_s=2.0)
    assert s.requests == 4 and s.ok == 2
    assert s.output_tokens == 30 and s.output_tok_s == pytest.approx(15.0)  # only OK requests' tokens
    assert s.tok_s_per_user == pytest.approx((10 / 1.0 + 20 / 2.0) / 2)
    assert s.ttft_p50_s == pytest.approx(0.3)
    assert s.itl_p50_s == pytest.approx(((0.9 / 9) + (1.5 / 19)) / 2)
    assert s.errors == {
        "http_error": 0,
        "stream_error": 1,
        "timeout": 1,
        "connection_error": 0,
        "not_event_stream": 0,
        "cancelled": 0,
    }
    assert s.error_rate == pytest.approx(0.5)
    assert s.requests_per_s == pytest.approx(2.0)
    assert s.achieved_concurrency == pytest.approx(4.5 / 2.0)


def test_goodput_counts_only_requests_within_the_slo():
    records = [rec(ttft=0.1, e2e=1.0), rec(ttft=3.0, e2e=4.0), rec(ttft=0.1, e2e=10.0, tokens=10)]
    s = summarize(
        records, target="t", api="tgi", users=3, max_new_tokens=16, wall_s=10.0, slo=SLO(ttft_s=2.0, itl_s=0.5)
    )
    assert s.goodput == pytest.approx(1 / 10)  # the second fails TTFT, the third fails ITL (~1.1 s)


def test_token_mismatch_is_flagged_not_hidden():
    s = summarize([rec(tokens=10, server=11), rec()], target="t", api="tgi", users=1, max_new_tokens=16, wall_s=1)
    assert s.token_mismatches == 1


def test_load_generator_bottleneck_is_flagged():
    busy = summarize([rec()], target="t", api="tgi", users=1, max_new_tokens=16, wall_s=1.0, loadgen_cpu=0.97)
    assert busy.loadgen_bottleneck and "CPU" in busy.notes[0]
    starved = summarize([rec(e2e=1.0)] * 4, target="t", api="tgi", users=64, max_new_tokens=16, wall_s=1.0)
    assert starved.loadgen_bottleneck and "held 4.0 (peak 4) of 64" in starved.notes[0]
    # One wave of 4 requests that overlapped: held, although they finished one after another.
    wave = [rec(start=0, e2e=e) for e in (1.0, 2.0, 3.0, 4.0)]
    s = summarize(wave, target="t", api="tgi", users=4, max_new_tokens=16, wall_s=4.0, loadgen_cpu=0.2)
    assert s.peak_concurrency == 4 and not s.loadgen_bottleneck
    fine = summarize([rec(e2e=1.0)] * 2, target="t", api="tgi", users=2, max_new_tokens=16, wall_s=1.0, loadgen_cpu=0.3)
    assert not fine.loadgen_bottleneck


def test_cancelled_requests_are_counted_not_blamed():
    records = [rec(), rec(status="timeout", tokens=3, server=None), rec(status="cancelled", tokens=0, server=None)]
    s = summarize(records, target="t", api="tgi", users=3, max_new_tokens=16, wall_s=1.0)
    assert s.requests == 3 and s.errors["cancelled"] == 1
    assert s.error_rate == pytest.approx(0.5)  # the timeout, out of the two the server answered


def test_refusals_are_not_taken_for_a_slow_load_generator():
    """Users turned away pause before retrying, so fewer requests are in flight than users: the server's doing."""
    refused = rec(status="stream_error", e2e=0.001, tokens=0, server=None)
    s = summarize([rec(e2e=1.0)] * 4 + [refused] * 50, target="t", api="tgi", users=64, max_new_tokens=16, wall_s=1.0)
    assert s.refused == 50 and not s.loadgen_bottleneck
    assert "50 requests refused before their first token" in s.notes
    late = rec(status="stream_error", e2e=0.5, tokens=3, server=None)  # an error after tokens is not a refusal
    assert summarize([late], target="t", api="tgi", users=1, max_new_tokens=16, wall_s=1.0).refused == 0
