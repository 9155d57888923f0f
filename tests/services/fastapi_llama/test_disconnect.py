"""A client that disconnects mid-stream stops its generation: a dead client must not hold the model."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import httpx
import pytest

from tests.support.prom import in_flight, scrape, scrape_until, value
from tests.support.servers import fastapi_llama


@pytest.fixture(scope="module")
def server(tiny_model, server_tmp):
    with fastapi_llama(server_tmp) as server:
        yield server


def _open_and_leave(url: str, body: dict, read_events: int, read_timeout: float = 30) -> None:
    timeout = httpx.Timeout(30, read=read_timeout)
    with httpx.Client(timeout=timeout) as client, client.stream("POST", f"{url}/generate_stream", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data:"):
                json.loads(line[5:])
                seen += 1
                if seen >= read_events:
                    break  # leaving the block closes the connection


def test_disconnect_frees_the_model(server):
    url = server.url
    before, _ = scrape(url)
    # 1,500 tokens take ~10 s here; the client leaves after 3.
    _open_and_leave(url, {"inputs": "Never mind", "parameters": {"max_new_tokens": 1500}}, read_events=3)
    t0 = time.monotonic()
    scrape_until(url, lambda samples: value(samples, "tgi_batch_current_size") == 0, timeout=5)
    freed_after = time.monotonic() - t0
    assert freed_after < 2, f"the abandoned generation held the model for {freed_after:.1f}s"
    r = httpx.post(f"{url}/generate", json={"inputs": "Next", "parameters": {"max_new_tokens": 4}}, timeout=30)
    assert r.status_code == 200
    after, _ = scrape(url)
    # Only the follow-up request finished; the abandoned one was not counted as a success.
    assert value(after, "tgi_request_success") - value(before, "tgi_request_success") == 1


def test_queued_request_whose_client_left_is_skipped(server):
    url = server.url
    before, _ = scrape(url)
    with (
        httpx.Client(timeout=30) as runner,
        runner.stream(
            "POST", f"{url}/generate_stream", json={"inputs": "Hold", "parameters": {"max_new_tokens": 200}}
        ) as r,
    ):
        lines = r.iter_lines()
        next(lines)  # the first request now holds the model
        _queued = httpx.Client(timeout=0.3)
        with pytest.raises(httpx.ReadTimeout):
            _queued.post(f"{url}/generate", json={"inputs": "Gone", "parameters": {"max_new_tokens": 900}})
        _queued.close()
        for _ in lines:
            pass
    after = scrape_until(url, lambda samples: value(samples, "tgi_batch_current_size") == 0, timeout=5)
    assert value(after, "tgi_batch_current_size") == 0
    generated = value(after, "tgi_request_generated_tokens_sum") - value(before, "tgi_request_generated_tokens_sum")
    assert generated == 200, "the request abandoned in the queue must not be generated"


@pytest.fixture(scope="module", params=["naive", "static", "continuous"])
def any_mode(request, tiny_model, server_tmp):
    args = ["--batching", request.param, "--max-concurrent-requests", "16"]
    if request.param != "naive":
        args += ["--max-batch-size", "4"]
    with fastapi_llama(server_tmp, *args) as server:
        yield server


def _leave_early(url: str, i: int) -> None:
    body = {"inputs": f"Client {i} leaves", "parameters": {"max_new_tokens": 1000}}
    with contextlib.suppress(httpx.ReadTimeout):  # still queued when it gave up: it leaves all the same
        _open_and_leave(url, body, read_events=2, read_timeout=1.0)


def test_many_clients_leaving_free_every_slot(any_mode):
    """Eight clients leave mid-stream or while queued: the queue and batch gauges return to zero and the
    server serves the next request at once."""
    url = any_mode.url
    threads = [threading.Thread(target=_leave_early, args=(url, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    samples = scrape_until(url, lambda samples: in_flight(samples) == 0, timeout=5)
    assert value(samples, "tgi_queue_size") == 0 and value(samples, "tgi_batch_current_size") == 0
    t1 = time.monotonic()
    r = httpx.post(f"{url}/generate", json={"inputs": "Next", "parameters": {"max_new_tokens": 4}}, timeout=30)
    assert r.status_code == 200 and time.monotonic() - t1 < 3
