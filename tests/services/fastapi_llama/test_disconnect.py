"""A client that disconnects mid-stream stops its generation: a dead client must not hold the model."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.prom import scrape, value
from tests.support.servers import fastapi_llama


@pytest.fixture(scope="module")
def server(tiny_model, server_tmp):
    with fastapi_llama(server_tmp) as server:
        yield server


def _open_and_leave(url: str, body: dict, read_events: int) -> None:
    with httpx.Client(timeout=30) as client, client.stream("POST", f"{url}/generate_stream", json=body) as r:
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
    while time.monotonic() - t0 < 5:
        samples, _ = scrape(url)
        if value(samples, "tgi_batch_current_size") == 0:
            break
        time.sleep(0.02)
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
    time.sleep(0.3)
    after, _ = scrape(url)
    assert value(after, "tgi_batch_current_size") == 0
    generated = value(after, "tgi_request_generated_tokens_sum") - value(before, "tgi_request_generated_tokens_sum")
    assert generated == 200, "the request abandoned in the queue must not be generated"
