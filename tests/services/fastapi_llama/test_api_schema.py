"""Every implemented route answers with bodies that validate against TGI's OpenAPI schemas."""

from __future__ import annotations

import httpx
import pytest

from tests.support.openapi import named, schema_of, validate
from tests.support.sse import stream

PROMPT = "The quick brown fox"


def test_generate_matches_generate_response(naive_server):
    r = httpx.post(f"{naive_server.url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8}})
    assert r.status_code == 200
    validate(r.json(), schema_of("/generate", "post", "200", "application/json"))
    details = r.json()["details"]
    assert details["generated_tokens"] == len(details["tokens"]) == 8
    assert details["finish_reason"] == "length"


def test_generate_stream_events_match_stream_response(naive_server):
    status, events = stream(
        f"{naive_server.url}/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True}}
    )
    assert status == 200
    assert len(events) == 6  # one event per token; the last one carries the text
    for ev in events:
        validate(ev.data, schema_of("/generate_stream", "post", "200", "text/event-stream"))
    assert [ev.data["index"] for ev in events] == list(range(6))
    assert all(ev.data["generated_text"] is None for ev in events[:-1])
    last = events[-1].data
    assert last["generated_text"] == "".join(ev.data["token"]["text"] for ev in events)
    validate(last["details"], named("StreamDetails"))
    assert last["details"]["generated_tokens"] == 6


@pytest.mark.parametrize("stream_flag", [False, True])
def test_compat_route(naive_server, stream_flag):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}, "stream": stream_flag}
    if stream_flag:
        status, events = stream(f"{naive_server.url}/", body)
        assert status == 200 and len(events) == 4
        for ev in events:
            validate(ev.data, schema_of("/", "post", "200", "text/event-stream"))
    else:
        r = httpx.post(f"{naive_server.url}/", json=body)
        assert r.status_code == 200
        validate(r.json(), schema_of("/", "post", "200", "application/json"))  # an array, unlike /generate
        assert len(r.json()) == 1 and r.json()[0]["details"]["generated_tokens"] == 4


# Every generation route's non-streaming answer, against the schema TGI documents for that route.
NON_STREAMING = {
    "/": {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}},
    "/generate": {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}},
    "/v1/completions": {"prompt": PROMPT, "max_tokens": 3},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3},
}


@pytest.mark.parametrize("path", list(NON_STREAMING))
def test_non_streaming_answers_match_their_routes_schema(naive_server, path):
    r = httpx.post(f"{naive_server.url}{path}", json=NON_STREAMING[path])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    validate(r.json(), schema_of(path, "post", "200", "application/json"))


def test_info(naive_server):
    r = httpx.get(f"{naive_server.url}/info")
    validate(r.json(), schema_of("/info", "get", "200", "application/json"))
    assert r.json()["max_input_tokens"] == 64 and r.json()["max_total_tokens"] == 1024


def test_health(naive_server):
    assert httpx.get(f"{naive_server.url}/health").status_code == 200


def test_completions_non_stream(naive_server):
    r = httpx.post(f"{naive_server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "model": "x"})
    assert r.status_code == 200
    body = r.json()
    validate(body, schema_of("/v1/completions", "post", "200", "application/json"))
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5


def test_completions_stream_with_usage(naive_server):
    body = {"prompt": [PROMPT], "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    status, events = stream(f"{naive_server.url}/v1/completions", body)
    assert status == 200
    assert events[-1].data == "[DONE]"
    chunks = [ev.data for ev in events[:-1]]
    for chunk in chunks:
        validate(chunk, schema_of("/v1/completions", "post", "200", "text/event-stream"))
    token_chunks = [c for c in chunks if c["choices"]]
    assert len(token_chunks) == 5
    assert [c["choices"][0]["finish_reason"] for c in token_chunks] == ["", "", "", "", "length"]
    usage = chunks[-1]["usage"]
    validate(usage, named("Usage"))
    assert usage["completion_tokens"] == 5


def test_completions_stream_with_running_usage(naive_server):
    """vLLM's `continuous_usage_stats`: every token chunk carries the count so far, the last one the total."""
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = {"prompt": PROMPT, "max_tokens": 5, "stream": True, "stream_options": options}
    status, events = stream(f"{naive_server.url}/v1/completions", body)
    assert status == 200
    chunks = [ev.data for ev in events[:-1]]
    assert [c["usage"]["completion_tokens"] for c in chunks if c["choices"]] == [1, 2, 3, 4, 5]
    assert not chunks[-1]["choices"] and chunks[-1]["usage"]["completion_tokens"] == 5
    plain = {**body, "stream_options": {"include_usage": True}}
    _, events = stream(f"{naive_server.url}/v1/completions", plain)
    chunks = [ev.data for ev in events[:-1]]
    token_chunks = [c for c in chunks if c["choices"]]
    # Without continuous_usage_stats the 5 token chunks carry no usage; only the final chunk does.
    assert len(token_chunks) == 5 and all("usage" not in c for c in token_chunks), token_chunks
    assert not chunks[-1]["choices"] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_chat_non_stream(naive_server):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_completion_tokens": 5, "model": "x"}
    r = httpx.post(f"{naive_server.url}/v1/chat/completions", json=body)
    assert r.status_code == 200
    answer = r.json()
    validate(answer, schema_of("/v1/chat/completions", "post", "200", "application/json"))
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] == 5


def test_chat_stream_with_usage(naive_server):
    """The chunks TGI documents (ChatCompletionChunk), the usage last, and the usage equal to the tokens sent."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    body = {"messages": messages, "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    status, events = stream(f"{naive_server.url}/v1/chat/completions", body)
    assert status == 200
    assert events[-1].data == "[DONE]"
    chunks = [ev.data for ev in events[:-1]]
    for chunk in chunks:
        validate(chunk, schema_of("/v1/chat/completions", "post", "200", "text/event-stream"))
    token_chunks = [c for c in chunks if c["choices"]]
    assert [c["choices"][0]["finish_reason"] for c in token_chunks] == [None, None, None, None, "length"]
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in token_chunks)
    usage = chunks[-1]["usage"]
    validate(usage, named("Usage"))
    assert usage["completion_tokens"] == len(token_chunks) == 5


def test_models(naive_server):
    r = httpx.get(f"{naive_server.url}/v1/models")
    validate(r.json(), schema_of("/v1/models", "get", "200", "application/json"))
    assert r.json()["data"][0]["id"].endswith("tiny-llama")


def test_metrics_content_type(naive_server):
    r = httpx.get(f"{naive_server.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
