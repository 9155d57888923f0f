"""The three batching modes: same API and greedy outputs; different admission; gauges that show the real batch."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import httpx
import pytest

from tests.support.prom import in_flight, scrape, scrape_until, value
from tests.support.servers import fastapi_llama
from tests.support.sse import stream

PROMPTS = [f"Prompt {i} is about {w}" for i, w in enumerate(["cats", "dogs", "the sea", "code", "tea", "rain"])]


@pytest.fixture(scope="module")
def static_server(tiny_model, server_tmp):
    with fastapi_llama(
        server_tmp,
        "--batching",
        "static",
        "--max-batch-size",
        "4",
        "--batch-wait-ms",
        "100",
        "--max-concurrent-requests",
        "8",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def continuous_server(tiny_model, server_tmp):
    with fastapi_llama(
        server_tmp, "--batching", "continuous", "--max-batch-size", "16", "--max-concurrent-requests", "8"
    ) as server:
        yield server


@pytest.fixture(params=["static", "continuous"])
def batched(request, static_server, continuous_server):
    return {"static": static_server, "continuous": continuous_server}[request.param]


def generate(url: str, prompt: str, n: int, **params) -> dict:
    r = httpx.post(
        f"{url}/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": n, **params}}, timeout=120
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_info_names_the_mode(static_server, continuous_server, naive_server):
    modes = [httpx.get(f"{s.url}/info").json()["batching"] for s in (naive_server, static_server, continuous_server)]
    assert modes == ["naive", "static", "continuous"]


def test_greedy_outputs_match_naive_under_concurrency(naive_server, batched):
    expected = [generate(naive_server.url, p, 24)["generated_text"] for p in PROMPTS]
    with cf.ThreadPoolExecutor(len(PROMPTS)) as pool:
        got = list(pool.map(lambda p: generate(batched.url, p, 24), PROMPTS))
    assert [g["generated_text"] for g in got] == expected
    assert all(g["details"]["generated_tokens"] == 24 for g in got)


def _long_then_short(url: str) -> tuple[float, float]:
    """Start a long stream; once it is generating, send a short request. Returns, from the short request's start,
    when the short one finished and when the long one did."""
    long_done: list[float] = []
    first_token = threading.Event()

    def run_long() -> None:
        body = {"inputs": "Long", "parameters": {"max_new_tokens": 400}}
        with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/generate_stream", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    first_token.set()
                    if json.loads(line[5:])["generated_text"] is not None:
                        long_done.append(time.perf_counter())

    t = threading.Thread(target=run_long)
    t.start()
    assert first_token.wait(30)
    time.sleep(0.2)
    t0 = time.perf_counter()
    generate(url, "Short", 5)
    short_took = time.perf_counter() - t0
    t.join(120)
    return short_took, long_done[0] - t0


def test_continuous_admits_a_request_mid_batch(continuous_server):
    short_took, long_left = _long_then_short(continuous_server.url)
    # The short request joined the running batch and finished long before the long one.
    assert short_took < long_left / 2, f"short took {short_took:.2f}s, the long one needed {long_left:.2f}s more"


def test_static_makes_late_requests_wait_for_the_next_batch(static_server):
    short_took, long_left = _long_then_short(static_server.url)
    assert short_took >= long_left, f"short finished at {short_took:.2f}s, before the batch ended at {long_left:.2f}s"


def _watch_gauges(url: str, until: float) -> list[tuple[float, float]]:
    seen = []
    while time.monotonic() < until:
        samples, _ = scrape(url)
        seen.append((value(samples, "tgi_queue_size"), value(samples, "tgi_batch_current_size")))
        time.sleep(0.03)
    return seen


def test_gauges_show_the_batch(static_server, continuous_server):
    body = {"inputs": "Gauge", "parameters": {"max_new_tokens": 300}}
    checks = {
        # continuous: all 6 join the running batch, none waits
        "continuous": (continuous_server, lambda q, b: (q, b) == (0.0, 6.0)),
        # static (max 4 per batch): a batch of several runs while the rest wait for the next one
        "static": (static_server, lambda q, b: 2 <= b <= 4 and q >= 2 and q + b == 6),
    }
    for mode, (server, expected) in checks.items():
        threads = [threading.Thread(target=stream, args=(f"{server.url}/generate_stream", body)) for _ in range(6)]
        for t in threads:
            t.start()
        seen = _watch_gauges(server.url, time.monotonic() + 2.5)
        for t in threads:
            t.join(120)
        assert any(expected(q, b) for q, b in seen), f"{mode}: (queue, batch) seen: {sorted(set(seen))}"
        samples, _ = scrape(server.url)
        assert (value(samples, "tgi_queue_size"), value(samples, "tgi_batch_current_size")) == (0.0, 0.0)


def test_cancelling_frees_the_slot(batched):
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{batched.url}/generate_stream", json={"inputs": "Bye", "parameters": {"max_new_tokens": 1500}}
        ) as r,
    ):
        for i, _ in enumerate(r.iter_lines()):
            if i > 4:
                break
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        samples, _ = scrape(batched.url)
        if value(samples, "tgi_batch_current_size") == 0:
            break
        time.sleep(0.05)
    assert value(samples, "tgi_batch_current_size") == 0
    assert generate(batched.url, "Next", 3)["details"]["generated_tokens"] == 3


def test_overload_still_answers_429(batched):
    body = {"inputs": "Fill", "parameters": {"max_new_tokens": 200}}
    threads = [threading.Thread(target=stream, args=(f"{batched.url}/generate_stream", body)) for _ in range(8)]
    for t in threads:
        t.start()
    # Until the 8 are admitted: a fixed sleep raced the threads on a loaded machine.
    scrape_until(batched.url, lambda samples: in_flight(samples) >= 8)
    r = httpx.post(f"{batched.url}/generate", json={"inputs": "Extra", "parameters": {"max_new_tokens": 2}})
    for t in threads:
        t.join(120)
    assert r.status_code == 429 and r.json()["error_type"] == "overloaded"


def test_stop_sequences_and_sampling_in_every_mode(batched):
    stop = generate(batched.url, "Stop here", 24)["details"]["tokens"][2]["text"]
    out = generate(batched.url, "Stop here", 24, stop=[stop])
    assert out["details"]["finish_reason"] == "stop_sequence" and out["details"]["generated_tokens"] <= 3
    if httpx.get(f"{batched.url}/info").json()["batching"] == "static":  # continuous: see below
        sampled = generate(batched.url, "Sample", 8, temperature=0.8, top_p=0.9)
        assert sampled["details"]["generated_tokens"] == 8


def test_continuous_refuses_what_it_cannot_honour(continuous_server):
    cases = [
        ({"do_sample": True}, "--continuous-sampling"),
        ({"temperature": 0.7}, "--continuous-sampling"),
        ({"repetition_penalty": 1.3}, "repetition_penalty"),
        ({"typical_p": 0.5}, "typical_p"),
    ]
    for params, named in cases:
        r = httpx.post(f"{continuous_server.url}/generate", json={"inputs": "Hi", "parameters": params})
        assert r.status_code == 422 and "continuous" in r.json()["error"] and named in r.json()["error"], params


def test_continuous_sampling_per_request(tiny_model, server_tmp, naive_server):
    with fastapi_llama(server_tmp, "--batching", "continuous", "--continuous-sampling") as server:
        # Greedy requests still match naive mode (top_k=1 under the hood).
        prompt = PROMPTS[0]
        assert (
            generate(server.url, prompt, 16)["generated_text"]
            == generate(naive_server.url, prompt, 16)["generated_text"]
        )
        hot = {generate(server.url, prompt, 16, temperature=5.0)["generated_text"] for _ in range(3)}
        assert len(hot) > 1  # sampled: different texts
        r = httpx.post(f"{server.url}/generate", json={"inputs": "Hi", "parameters": {"do_sample": True, "seed": 1}})
        assert r.status_code == 422 and "seed" in r.json()["error"]
