"""The client's Prometheus metrics from request records, on a registry of their own: a 429 and a 500 are both
http_errors, and the `http_status` label tells them apart; the label's values stay bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from llm_loadtest.exporter import ClientMetrics
from tests.support.records import rec

LABELS = {"target": "t", "api": "tgi", "max_new_tokens": "16", "arrival_rate": ""}  # closed loop: no rate


def requests(metrics: ClientMetrics, status: str, http_status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "llm_client_requests_total", {**LABELS, "status": status, "http_status": http_status}
    )


def test_requests_are_counted_by_status_and_http_status():
    metrics = ClientMetrics(CollectorRegistry(), lambda: 0)
    records = [
        rec(),
        rec(),
        rec("http_error", ttft=None, tokens=0, http_status=429),
        rec("http_error", ttft=None, tokens=0, http_status=500),
        rec("http_error", ttft=None, tokens=0, http_status=500),
        rec("stream_error", ttft=None, tokens=0, http_status=200),  # TGI's overload event inside a 200 stream
        rec("connection_error", ttft=None, tokens=0, http_status=None),
        rec("http_error", ttft=None, tokens=0, http_status=999),  # a broken server's status line
    ]
    for r in records:
        metrics.observe(r)
    assert requests(metrics, "ok", "200") == 2
    assert requests(metrics, "http_error", "429") == 1
    assert requests(metrics, "http_error", "500") == 2
    assert requests(metrics, "stream_error", "200") == 1
    assert requests(metrics, "connection_error", "none") == 1
    assert requests(metrics, "http_error", "invalid") == 1
    assert requests(metrics, "http_error", "999") is None
