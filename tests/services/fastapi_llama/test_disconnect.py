"""A client that disconnects mid-stream stops its generation: a dead client must not hold the model."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import httpx
import pytest

from tests.support.prom import Samples, in_flight, scrape, value, wait_for_metrics
from tests.support.servers import RunningServer, fastapi_llama
from tests.support.waits import failure

# What a server that is idle may still take to start a request: the engine thread's wake-up, static batching's
# 50 ms gather, the continuous scheduler's pick-up.
PICKUP_S = 0.25


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


def _delta(after: Samples, before: Samples, name: str) -> float:
    return value(after, name) - value(before, name)


def _next_request_is_served_at_once(server: RunningServer) -> tuple[Samples, float]:
    """Send a 4-token request and check that it did not wait behind an abandoned generation (one of hundreds of
    tokens): its time in the queue stays under 25 times its own 4 tokens' generation time, where a generation
    still holding the model would cost it hundreds of times that, whatever the machine's load. Returns the
    metrics after it and the server's time per token for it."""
    before, _ = scrape(server.url)
    try:
        r = httpx.post(
            f"{server.url}/generate", json={"inputs": "Next", "parameters": {"max_new_tokens": 4}}, timeout=60
        )
    except httpx.TimeoutException:
        raise AssertionError(failure("the next 4-token request got no answer in 60 s", server.log)) from None
    assert r.status_code == 200, r.text
    after, _ = scrape(server.url)
    assert _delta(after, before, "tgi_request_queue_duration_count") == 1
    queued = _delta(after, before, "tgi_request_queue_duration_sum")
    took = _delta(after, before, "tgi_request_inference_duration_sum")
    assert queued < 25 * took + PICKUP_S, failure(
        f"the next request queued {queued:.3f}s behind something, then generated 4 tokens in {took:.3f}s", server.log
    )
    return after, took / 4


def test_disconnect_frees_the_model(server):
    url = server.url
    before, _ = scrape(url)
    # 1,500 tokens take ~10 s here; the client leaves after 3.
    _open_and_leave(url, {"inputs": "Never mind", "parameters": {"max_new_tokens": 1500}}, read_events=3)
    t0 = time.monotonic()
    freed = wait_for_metrics(
        server, lambda samples: value(samples, "tgi_batch_current_size") == 0, "the abandoned request to leave"
    )
    freed_after = time.monotonic() - t0
    # It left because it was cancelled, not because its 1,500 tokens were done...
    assert _delta(freed, before, "tgi_request_success") == 0, "the abandoned generation ran to its end"
    # ...its generation stopped there: the next request is served at once...
    after, per_token = _next_request_is_served_at_once(server)
    # ...and the server noticed soon: within the time of a tenth of the tokens asked for, measured on this
    # machine, as loaded as it is, by the next request.
    assert freed_after < 150 * per_token + PICKUP_S, (
        f"the abandoned generation held the model for {freed_after:.2f}s, {freed_after / per_token:.0f} tokens' time"
    )
    # Only the follow-up request finished; the abandoned one was not counted as a success.
    assert _delta(after, before, "tgi_request_success") == 1


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
    # The runner's success is recorded just after its last token is sent.
    done = wait_for_metrics(
        server,
        lambda samples: in_flight(samples) == 0 and _delta(samples, before, "tgi_request_success") == 1,
        "the runner to finish and the queue to empty",
    )
    assert _delta(done, before, "tgi_request_generated_tokens_sum") == 200
    # Had the abandoned request been generated after all, it would hold the model for its 900 tokens now, and it
    # never counts: the next request is served at once, and it is the only other one generated.
    after, _ = _next_request_is_served_at_once(server)
    generated = _delta(after, before, "tgi_request_generated_tokens_sum")
    assert generated == 200 + 4, "the request abandoned in the queue must not be generated"
    assert _delta(after, before, "tgi_request_success") == 2


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
    samples = wait_for_metrics(any_mode, lambda samples: in_flight(samples) == 0, "queue and batch back to zero")
    assert value(samples, "tgi_queue_size") == 0 and value(samples, "tgi_batch_current_size") == 0
    _next_request_is_served_at_once(any_mode)
