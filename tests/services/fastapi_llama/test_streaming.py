"""Streaming yields each token as it is generated, not all at the end."""

from __future__ import annotations

import itertools

from tests.support.sse import stream


def test_tokens_arrive_one_by_one(naive_server):
    n = 96
    status, events = stream(
        f"{naive_server.url}/generate_stream", {"inputs": "Once upon a time", "parameters": {"max_new_tokens": n}}
    )
    assert status == 200 and len(events) == n
    times = [ev.at for ev in events]
    assert times == sorted(times)
    first, last = times[0], times[-1]
    # Buffered output would arrive in one burst at the end; streamed output spreads over the generation.
    assert last - first > 0.5 * last, f"first event at {first:.3f}s, last at {last:.3f}s"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    distinct = sum(1 for g in gaps if g > 0.0005)
    assert distinct > n // 2, f"only {distinct} of {len(gaps)} gaps look like separate deliveries"
