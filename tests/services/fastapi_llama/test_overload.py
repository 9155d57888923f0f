"""Beyond --max-concurrent-requests, requests are refused as TGI refuses them."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.support.openapi import named, validate
from tests.support.prom import in_flight, scrape, scrape_until, value
from tests.support.servers import fastapi_llama
from tests.support.sse import stream

LIMIT = 2


@pytest.fixture(scope="module")
def small_server(tiny_model, server_tmp):
    with fastapi_llama(server_tmp, "--max-concurrent-requests", str(LIMIT)) as server:
        yield server


def _fill(url: str, started: threading.Event) -> list[threading.Thread]:
    # Long enough to outlast the three probes below on a loaded machine.
    body = {"inputs": "Busy", "parameters": {"max_new_tokens": 800}}
    threads = [threading.Thread(target=stream, args=(f"{url}/generate_stream", body)) for _ in range(LIMIT)]
    for t in threads:
        t.start()
    return threads


def _wait_full(url: str) -> None:
    assert in_flight(scrape_until(url, lambda samples: in_flight(samples) >= LIMIT)) >= LIMIT, "never held the load"


def test_overload_answers_429_and_stream_error_event(small_server):
    url = small_server.url
    before, _ = scrape(url)
    threads = _fill(url, threading.Event())
    _wait_full(url)

    r = httpx.post(f"{url}/generate", json={"inputs": "One more", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert r.status_code == 429
    validate(r.json(), named("ErrorResponse"))
    assert r.json()["error_type"] == "overloaded"

    # TGI reports overload on the streaming routes as an error event inside a 200 stream.
    status, events = stream(f"{url}/generate_stream", {"inputs": "One more", "parameters": {"max_new_tokens": 2}})
    assert status == 200 and len(events) == 1
    assert events[0].data["error_type"] == "overloaded"
    status, events = stream(f"{url}/v1/completions", {"prompt": "One more", "max_tokens": 2, "stream": True})
    assert status == 200 and events[0].data["error_type"] == "overloaded"

    for t in threads:
        t.join(60)
    after, _ = scrape(url)
    assert (
        value(after, "tgi_request_failure", err="overloaded") - value(before, "tgi_request_failure", err="overloaded")
        == 3
    )
    # Capacity comes back once the load is gone.
    r = httpx.post(f"{url}/generate", json={"inputs": "Now", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert r.status_code == 200
