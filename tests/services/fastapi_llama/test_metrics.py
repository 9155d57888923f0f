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


HI = [{"role": "user", "content": "Hi"}]
# Every way a generation request is refused as a bad input, on every route: by the route itself (OpenAI's fields),
# by the service (limits, parameters), by the schema, or as a body that does not parse.
REFUSED = {
    "completions empty prompt": ("/v1/completions", {"prompt": " ", "max_tokens": 4}),
    "completions n": ("/v1/completions", {"prompt": "Hi", "max_tokens": 4, "n": 2}),
    "completions caps differ, stream": (
        "/v1/completions",
        {"prompt": "Hi", "max_tokens": 4, "max_completion_tokens": 5, "stream": True},
    ),
    "completions over the total": ("/v1/completions", {"prompt": "Hi", "max_tokens": 5000}),
    "completions schema": ("/v1/completions", {"prompt": [], "max_tokens": 4}),
    "chat tools": ("/v1/chat/completions", {"messages": HI, "max_tokens": 4, "tools": [{"type": "function"}]}),
    "chat caps differ, stream": (
        "/v1/chat/completions",
        {"messages": HI, "max_tokens": 4, "max_completion_tokens": 5, "stream": True},
    ),
    "chat over the total": ("/v1/chat/completions", {"messages": HI, "max_tokens": 5000}),
    "chat schema": ("/v1/chat/completions", {"messages": [], "max_tokens": 4}),
    "chat bad json": ("/v1/chat/completions", b'{"messages": ['),
    "generate empty": ("/generate", {"inputs": ""}),
    "generate over the total": ("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 5000}}),
    "generate_stream schema": ("/generate_stream", {"inputs": "Hi", "parameters": {"max_new_tokens": 0}}),
    "compat over the total": ("/", {"inputs": "Hi", "stream": True, "parameters": {"max_new_tokens": 5000}}),
}


def _post(url: str, path: str, body: dict | bytes) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"}, timeout=30)
    return httpx.post(f"{url}{path}", json=body, timeout=30)


def _moved(before, after) -> dict[str, float]:
    """The request counters that moved, by name and err."""
    moved = {}
    for (name, labels), v in after.items():
        if name in ("tgi_request_count", "tgi_request_success", "tgi_request_failure"):
            key = name + "".join(f"{{{k}={lv}}}" for k, lv in sorted(labels))
            if delta := v - before.get((name, labels), 0.0):
                moved[key] = delta
    return moved


@pytest.mark.parametrize(("path", "body"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_request_counts_once_as_a_request_and_once_as_a_validation_failure(naive_server, path, body):
    """TGI's semantics: tgi_request_count counts every request, tgi_request_failure each refusal by its err."""
    before, _ = scrape(naive_server.url)
    r = _post(naive_server.url, path, body)
    assert r.status_code == 422 and r.json()["error_type"] == "validation", r.text
    after, _ = scrape(naive_server.url)
    assert _moved(before, after) == {"tgi_request_count": 1, "tgi_request_failure{err=validation}": 1}


def test_a_body_over_the_payload_limit_counts_as_a_refused_request(naive_server):
    before, _ = scrape(naive_server.url)
    r = _post(naive_server.url, "/v1/completions", {"prompt": "x" * 2_000_001, "max_tokens": 4})
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"
    after, _ = scrape(naive_server.url)
    assert _moved(before, after) == {"tgi_request_count": 1, "tgi_request_failure{err=payload_too_large}": 1}


def test_what_is_no_generation_request_counts_nothing(naive_server):
    before, _ = scrape(naive_server.url)
    assert httpx.get(f"{naive_server.url}/generate").status_code == 405
    assert _post(naive_server.url, "/v1/nothing", {"prompt": "Hi"}).status_code == 404
    assert _post(naive_server.url, "/v1/nothing", b"x" * 2_000_001).status_code == 413
    after, _ = scrape(naive_server.url)
    assert _moved(before, after) == {}


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
