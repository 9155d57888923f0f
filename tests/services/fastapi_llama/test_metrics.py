"""/metrics exports TGI's names and types, and they move with the traffic."""

from __future__ import annotations

import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.prom import gauges, in_flight, scrape, value, wait_for_metrics
from tests.support.servers import fastapi_llama
from tests.support.sse import stream

TGI_METRICS = {
    "tgi_request_count": "counter",
    "tgi_request_success": "counter",
    "tgi_request_failure": "counter",
    "tgi_request_duration": "histogram",
    "tgi_request_queue_duration": "histogram",
    "tgi_request_inference_duration": "histogram",
    "tgi_request_mean_time_per_token_duration": "histogram",
    "tgi_request_generated_tokens": "histogram",
    "tgi_request_input_length": "histogram",
    "tgi_request_max_new_tokens": "histogram",
    "tgi_queue_size": "gauge",
    "tgi_batch_current_size": "gauge",
    "tgi_batch_current_max_tokens": "gauge",
}


def test_exports_tgi_names_and_types(naive_server):
    text = httpx.get(f"{naive_server.url}/metrics").text
    _, types = scrape(naive_server.url)
    assert len(list(text_string_to_metric_families(text))) == len(TGI_METRICS)  # the reference parser accepts it
    for name, kind in TGI_METRICS.items():
        assert f"# TYPE {name} {kind}" in text
    # TGI's counters carry no _total suffix; dashboards written for TGI query them by these exact names.
    assert "\ntgi_request_count " in text and "tgi_request_count_total" not in text
    assert set(TGI_METRICS) <= set(types)


def test_request_metrics_move(naive_server):
    before, _ = scrape(naive_server.url)
    r = httpx.post(
        f"{naive_server.url}/generate", json={"inputs": "Metrics please", "parameters": {"max_new_tokens": 7}}
    )
    assert r.status_code == 200
    httpx.post(f"{naive_server.url}/generate", json={"inputs": ""})
    after, _ = scrape(naive_server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tgi_request_count") == 2
    assert delta("tgi_request_success") == 1
    assert delta("tgi_request_failure", err="validation") == 1
    assert delta("tgi_request_generated_tokens_sum") == 7
    assert delta("tgi_request_generated_tokens_count") == 1
    assert delta("tgi_request_max_new_tokens_sum") == 7
    assert delta("tgi_request_duration_count") == 1
    assert delta("tgi_request_duration_sum") > 0
    assert delta("tgi_request_mean_time_per_token_duration_count") == 1
    assert delta("tgi_request_input_length_sum") >= 2
    # A histogram's buckets are cumulative and end at the count.
    assert value(after, "tgi_request_duration_bucket", le="+Inf") == value(after, "tgi_request_duration_count")


@pytest.fixture(scope="module")
def queue_server(tiny_model, server_tmp):
    with fastapi_llama(server_tmp, "--max-concurrent-requests", "8") as server:
        yield server


def test_queue_and_batch_gauges_show_what_happens(queue_server):
    url = queue_server.url
    before, _ = scrape(url)
    body = {"inputs": "Long one", "parameters": {"max_new_tokens": 300}}
    threads = [threading.Thread(target=stream, args=(f"{url}/generate_stream", body)) for _ in range(3)]
    for t in threads:
        t.start()
    samples = wait_for_metrics(
        queue_server, lambda s: gauges(s)[:2] == (2.0, 1.0), "naive mode to run 1 and queue 2", timeout=60
    )
    assert gauges(samples)[2] > 300  # input tokens + max_new_tokens of the running request
    for t in threads:
        t.join(120)
    # Back to zero, and the three successes recorded (a client can read its last token just before the server
    # records the request).
    samples = wait_for_metrics(
        queue_server,
        lambda s: in_flight(s) == 0 and value(s, "tgi_request_success") - value(before, "tgi_request_success") == 3,
        "queue and batch back to zero, three successes",
    )
    # Each request waited behind the whole generations before it: 0 + 1 + 2 of them, against 3 generations in
    # all, so the time queued is about the time generating; a third of it is a margin a loaded machine keeps.
    queued = value(samples, "tgi_request_queue_duration_sum") - value(before, "tgi_request_queue_duration_sum")
    generating = value(samples, "tgi_request_inference_duration_sum") - value(
        before, "tgi_request_inference_duration_sum"
    )
    assert queued > generating / 3, f"queued {queued:.2f}s in all, generating {generating:.2f}s"
