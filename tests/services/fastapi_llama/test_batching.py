"""The three batching modes: same API and greedy outputs; different admission; gauges that show the real batch."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import httpx
import pytest

from tests.support.prom import Samples, gauges, in_flight, scrape, value, wait_for_metrics
from tests.support.servers import RunningServer, fastapi_llama
from tests.support.sse import stream
from tests.support.waits import failure

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


def _long_then_short(server: RunningServer) -> tuple[float, float, Samples, Samples]:
    """Start a long stream; once it has streamed a few tokens (it is generating), send a short request. Returns,
    from the short request's start, when the short one finished and when the long one did, with the server's
    metrics from before the long one and from the moment the short one came back."""
    url = server.url
    long_done: list[float] = []
    generating = threading.Event()

    def run_long() -> None:
        body = {"inputs": "Long", "parameters": {"max_new_tokens": 400}}
        seen = 0
        with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/generate_stream", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    seen += 1
                    if seen >= 5:
                        generating.set()
                    if json.loads(line[5:])["generated_text"] is not None:
                        long_done.append(time.perf_counter())

    before, _ = scrape(url)
    t = threading.Thread(target=run_long)
    t.start()
    assert generating.wait(60), failure("the long request streamed fewer than 5 tokens in 60 s", server.log)
    t0 = time.perf_counter()
    generate(url, "Short", 5)
    short_took = time.perf_counter() - t0
    at_short_end, _ = scrape(url)
    t.join(120)
    assert long_done, failure("the long request never finished", server.log)
    return short_took, long_done[0] - t0, before, at_short_end


def test_continuous_admits_a_request_mid_batch(continuous_server):
    short_took, long_left, before, at_short_end = _long_then_short(continuous_server)
    # The short request joined the running batch: when it came back, it alone had finished and the long one was
    # still generating (the server's own count, whatever the client threads' timing)...
    finished = value(at_short_end, "tgi_request_success") - value(before, "tgi_request_success")
    batch = value(at_short_end, "tgi_batch_current_size")
    assert finished == 1 and batch >= 1, f"finished {finished}, batch {batch} when the short request came back"
    # ...and long before it: 5 tokens against the long one's remaining ~395, so half is a wide margin even when
    # a loaded machine slows one of them.
    assert short_took < long_left / 2, f"short took {short_took:.2f}s, the long one needed {long_left:.2f}s more"


def test_static_makes_late_requests_wait_for_the_next_batch(static_server):
    short_took, long_left, before, at_short_end = _long_then_short(static_server)
    # The short request waited for the long one's batch to end: by the time it came back, the server had finished
    # both (its own count: the client thread reading the long stream may lag on a loaded machine).
    finished = value(at_short_end, "tgi_request_success") - value(before, "tgi_request_success")
    assert finished == 2, f"short finished at {short_took:.2f}s, the long one at {long_left:.2f}s; server: {finished}"


@pytest.mark.timeout(600)  # two rounds of 6 x 300 tokens: over 300 s with a busy loop and a second suite beside it
def test_gauges_show_the_batch(static_server, continuous_server):
    body = {"inputs": "Gauge", "parameters": {"max_new_tokens": 300}}
    checks = {
        # continuous: all 6 join the running batch, none waits
        "continuous": (continuous_server, lambda q, b: (q, b) == (0.0, 6.0)),
        # static (max 4 per batch): a batch of several runs while others wait for the next one. Under load the six
        # can arrive over more than one 100 ms window: a first batch of 1, then (1 waiting, 4 running) was seen;
        # whichever way they arrive, some batch of 2-4 runs while at least one waits.
        "static": (static_server, lambda q, b: 2 <= b <= 4 and q >= 1 and q + b <= 6),
    }
    for mode, (server, expected) in checks.items():
        # Sent together, so that a loaded machine cannot spread them over several of static's 100 ms windows.
        start = threading.Barrier(6)

        def one(url: str = server.url, start: threading.Barrier = start) -> None:
            start.wait(30)
            stream(f"{url}/generate_stream", body)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        wait_for_metrics(server, lambda s, ok=expected: ok(*gauges(s)[:2]), f"{mode}: the (queue, batch) it shows")
        for t in threads:
            t.join(120)
        wait_for_metrics(server, lambda s: in_flight(s) == 0, f"{mode}: queue and batch back to zero")


def test_cancelling_frees_the_slot(batched):
    before, _ = scrape(batched.url)
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{batched.url}/generate_stream", json={"inputs": "Bye", "parameters": {"max_new_tokens": 1500}}
        ) as r,
    ):
        for i, _ in enumerate(r.iter_lines()):
            if i > 4:
                break
    freed = wait_for_metrics(batched, lambda s: value(s, "tgi_batch_current_size") == 0, "the cancelled request to go")
    # It went because it was cancelled, not because its 1,500 tokens were done: it never counted as a success.
    assert value(freed, "tgi_request_success") == value(before, "tgi_request_success")
    assert generate(batched.url, "Next", 3)["details"]["generated_tokens"] == 3


def test_overload_still_answers_429(batched):
    body = {"inputs": "Fill", "parameters": {"max_new_tokens": 200}}
    threads = [threading.Thread(target=stream, args=(f"{batched.url}/generate_stream", body)) for _ in range(8)]
    for t in threads:
        t.start()
    # Until the 8 are admitted: a fixed sleep raced the threads on a loaded machine.
    wait_for_metrics(batched, lambda samples: in_flight(samples) >= 8, "the 8 streams to be admitted")
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
