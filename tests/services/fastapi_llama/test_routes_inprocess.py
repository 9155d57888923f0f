"""The HTTP layer in process: create_app over a fake engine, under FastAPI's TestClient. Statuses, bodies, headers
and metrics as TGI's clients and dashboards read them; the real-server tests check the same against the model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_llama.app import create_app
from fastapi_llama.metrics import ServerMetrics
from fastapi_llama.service import Service
from fastapi_llama.settings import Settings
from tests.services.fastapi_llama.fake_engine import FakeEngine
from tests.support.openapi import named, schema_of, validate
from tests.support.prom import Samples, parse, value

LIMIT = 2
SETTINGS = Settings(
    model_id="test/fake-model",
    max_concurrent_requests=LIMIT,
    max_input_tokens=32,
    max_total_tokens=64,
    payload_limit=10_000,
)
SCRIPT_TEXT = " the cat sat on the mat"  # 8 tokens: " the", " c", "at", " s", "at", " on", " the", " mat"
EOS = 2
PROMPT = "Hello"  # 3 tokens with BOS


@dataclass
class Served:
    client: TestClient
    service: Service
    engine: FakeEngine

    def metrics(self) -> Samples:
        return parse(self.client.get("/metrics").text)[0]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)


@pytest.fixture(scope="module")
def script(tiny_tokenizer: Any) -> list[int]:
    return tiny_tokenizer(SCRIPT_TEXT, add_special_tokens=False).input_ids


def build(tokenizer: Any, script: list[int]) -> tuple[FastAPI, Service, FakeEngine]:
    engine = FakeEngine(tokenizer, script)
    engine.start()
    service = Service(SETTINGS, engine, tokenizer, ServerMetrics())
    return create_app(service), service, engine


@pytest.fixture
def served(tiny_tokenizer: Any, script: list[int]) -> Iterator[Served]:
    app, service, engine = build(tiny_tokenizer, script)
    with TestClient(app) as client:
        yield Served(client, service, engine)
    assert not engine.healthy(), "the app's lifespan stops the engine"


def sse(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of an event stream, JSON-decoded except `[DONE]`."""
    payloads = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def generate(n: int = 4, **parameters: Any) -> dict[str, Any]:
    return {"inputs": PROMPT, "parameters": {"max_new_tokens": n, **parameters}}


# The routes


def test_generate_answers_the_engines_tokens(served, script):
    r = served.client.post("/generate", json=generate(4))
    assert r.status_code == 200
    validate(r.json(), schema_of("/generate", "post", "200", "application/json"))
    details = r.json()["details"]
    assert r.json()["generated_text"] == " the cat s"
    assert [t["id"] for t in details["tokens"]] == script[:4]
    assert [t["logprob"] for t in details["tokens"]] == [-0.5] * 4
    assert (details["finish_reason"], details["generated_tokens"], details["seed"]) == ("length", 4, None)


def test_generate_stream_sends_one_event_per_token_and_the_text_last(served, script):
    r = served.client.post("/generate_stream", json=generate(5, details=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    events = sse(r)
    for ev in events:
        validate(ev, schema_of("/generate_stream", "post", "200", "text/event-stream"))
    assert [ev["index"] for ev in events] == [0, 1, 2, 3, 4]
    assert [ev["token"]["id"] for ev in events] == script[:5]
    assert all(ev["generated_text"] is None and ev["details"] is None for ev in events[:-1])
    assert events[-1]["generated_text"] == " the cat sat"
    assert events[-1]["details"] == {"finish_reason": "length", "generated_tokens": 5, "input_length": 3, "seed": None}


@pytest.mark.parametrize("stream", [False, True])
def test_compat_route_answers_either_way(served, stream):
    r = served.client.post("/", json={**generate(3), "stream": stream})
    assert r.status_code == 200
    if stream:
        events = sse(r)
        assert len(events) == 3 and events[-1]["generated_text"] == " the cat"
    else:  # an array of one GenerateResponse, as TGI answers (its Python client reads payload[0])
        validate(r.json(), schema_of("/", "post", "200", "application/json"))
        assert [a["generated_text"] for a in r.json()] == [" the cat"]


def test_return_full_text_prepends_the_prompt(served):
    r = served.client.post("/generate", json=generate(2, return_full_text=True, details=False))
    assert r.json() == {"generated_text": PROMPT + " the c"}


def test_stop_sequence_ends_the_answer(served):
    details = served.client.post("/generate", json=generate(8, stop=["sat"])).json()["details"]
    assert (details["finish_reason"], details["generated_tokens"]) == ("stop_sequence", 5)


def test_eos_ends_the_answer(served, script):
    served.engine.script = [*script[:2], EOS, *script[2:]]
    body = served.client.post("/generate", json=generate(8)).json()
    assert body["generated_text"] == " the c"
    assert (body["details"]["finish_reason"], body["details"]["generated_tokens"]) == ("eos_token", 3)
    assert body["details"]["tokens"][-1] == {"id": EOS, "text": "</s>", "logprob": -0.5, "special": True}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", generate(2)),
        ("/generate_stream", generate(2)),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2}),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "stream": True}),
    ],
    ids=["generate", "generate_stream", "completions", "completions-stream"],
)
def test_request_id_is_kept_from_the_client_or_made(served, path, body):
    r = served.client.post(path, json=body, headers={"x-request-id": "client-id-7"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-id-7"
    assert served.engine.submitted[-1].request.request_id == "client-id-7"
    made = served.client.post(path, json=body).headers["x-request-id"]
    assert len(made) == 32 and made == served.engine.submitted[-1].request.request_id


def test_completions_answer_in_openai_shape(served):
    r = served.client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3})
    assert r.status_code == 200
    body = r.json()
    validate(body, schema_of("/v1/completions", "post", "200", "application/json"))
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert (body["model"], body["system_fingerprint"]) == ("test/fake-model", "fastapi-llama-fake")
    assert body["choices"] == [{"index": 0, "text": " the cat", "finish_reason": "length", "logprobs": None}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_completions_stream_sends_chunks_usage_and_done(served):
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = {"prompt": PROMPT, "max_tokens": 3, "stream": True, "stream_options": options}
    events = sse(served.client.post("/v1/completions", json=body))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, schema_of("/v1/completions", "post", "200", "text/event-stream"))
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["text"] for c in chunks[:3]] == [" the", " c", "at"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:3]] == ["", "", "length"]
    assert [c["usage"]["completion_tokens"] for c in chunks[:3]] == [1, 2, 3]
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 6


@pytest.mark.parametrize("stream", [False, True])
def test_completions_report_eos_as_stop(served, script, stream):
    served.engine.script = [script[0], EOS]
    r = served.client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "stream": stream})
    if stream:
        chunks = sse(r)[:-1]
        assert [c["choices"][0]["text"] for c in chunks] == [" the", ""]  # special tokens are not text
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        assert r.json()["choices"][0]["finish_reason"] == "stop" and r.json()["choices"][0]["text"] == " the"


def test_models_names_the_served_model(served):
    r = served.client.get("/v1/models")
    validate(r.json(), schema_of("/v1/models", "get", "200", "application/json"))
    assert r.json()["id"] == r.json()["data"][0]["id"] == "test/fake-model"
    assert r.json()["data"][0]["created"] == served.service.started_at


def test_info_reads_the_engines_description_and_the_limits(served):
    r = served.client.get("/info")
    validate(r.json(), schema_of("/info", "get", "200", "application/json"))
    info = r.json()
    assert (info["model_dtype"], info["model_device_type"], info["batching"]) == ("float16", "fake", "fake")
    assert (info["max_concurrent_requests"], info["max_input_tokens"], info["max_total_tokens"]) == (LIMIT, 32, 64)
    assert info["model_id"] == "test/fake-model"


@pytest.mark.parametrize("alive", [True, False])
def test_health_follows_the_engine(served, alive):
    served.engine.alive = alive
    r = served.client.get("/health")
    if alive:
        assert r.status_code == 200 and r.content == b""
    else:
        assert r.status_code == 503 and r.json() == {"error": "unhealthy", "error_type": "healthcheck"}


def test_unknown_route_is_404_in_tgi_shape(served):
    r = served.client.get("/nope")
    assert r.status_code == 404 and r.json()["error_type"] == "not_found"


# Errors, in TGI's shape


def assert_tgi_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    validate(response.json(), named("ErrorResponse"))
    assert response.json()["error_type"] == error_type and response.json()["error"]


BAD = {
    "missing inputs": ("/generate", {"parameters": {"max_new_tokens": 2}}),
    "blank inputs": ("/generate_stream", {"inputs": "  "}),
    "max_new_tokens zero": ("/generate", generate(0)),
    "unknown parameter": ("/generate_stream", {"inputs": "Hi", "parameters": {"max_new_token": 3}}),
    "best_of": ("/generate", generate(2, best_of=2)),
    "input too long": ("/generate", {"inputs": "word " * 40, "parameters": {"max_new_tokens": 2}}),
    "beyond max_total_tokens": ("/generate_stream", generate(62)),
    "engine refuses typical_p": ("/generate", generate(2, typical_p=0.5)),
    "completions without prompt": ("/v1/completions", {"max_tokens": 3}),
    "completions max_tokens zero": ("/v1/completions", {"prompt": "Hi", "max_tokens": 0}),
}
# Refused by the OpenAI route's own checks before the service sees them: 422, but not counted in the metrics.
OPENAI_BAD = {
    "empty prompt": {"prompt": ""},
    "two prompts": {"prompt": ["a", "b"]},
    "suffix": {"prompt": "Hi", "suffix": "!"},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_422_counted_and_never_reaches_the_engine(served, case):
    path, body = BAD[case]
    r = served.client.post(path, json=body)
    assert_tgi_error(r, 422, "validation")
    samples = served.metrics()
    assert value(samples, "tgi_request_count") == 1
    assert value(samples, "tgi_request_failure", err="validation") == 1
    assert served.engine.submitted == [] and served.service.in_flight == 0


@pytest.mark.parametrize("case", list(OPENAI_BAD))
def test_openai_only_checks_are_422_and_never_reach_the_engine(served, case):
    assert_tgi_error(served.client.post("/v1/completions", json=OPENAI_BAD[case]), 422, "validation")
    assert served.engine.submitted == [] and served.service.in_flight == 0


def test_engine_refusal_names_the_batching_mode(served):
    r = served.client.post("/generate", json=generate(2, typical_p=0.5))
    assert r.json()["error"].endswith("not supported with --batching fake: typical_p")


def test_unparseable_body_is_422(served):
    r = served.client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert_tgi_error(r, 422, "validation")
    assert value(served.metrics(), "tgi_request_failure", err="validation") == 1


def test_body_over_the_payload_limit_is_413(served):
    r = served.client.post("/generate", json={"inputs": "x" * (SETTINGS.payload_limit + 1)})
    assert_tgi_error(r, 413, "payload_too_large")
    assert served.engine.submitted == []


@pytest.mark.parametrize("path", ["/generate", "/v1/completions"])
def test_generation_error_is_424(served, path):
    served.engine.fail_after = 2
    body = generate(4) if path == "/generate" else {"prompt": PROMPT, "max_tokens": 4}
    assert_tgi_error(served.client.post(path, json=body), 424, "generation")
    samples = served.metrics()
    assert value(samples, "tgi_request_failure", err="generation") == 1
    assert value(samples, "tgi_request_success") == 0
    assert served.service.in_flight == 0


@pytest.mark.parametrize("path", ["/generate_stream", "/v1/completions"])
def test_generation_error_in_a_stream_is_an_error_event_after_the_tokens(served, path):
    served.engine.fail_after = 2
    body = generate(4) if path == "/generate_stream" else {"prompt": PROMPT, "max_tokens": 4, "stream": True}
    r = served.client.post(path, json=body)
    assert r.status_code == 200
    events = sse(r)
    assert len(events) == 3  # two tokens, then the error; no [DONE]
    assert events[-1] == {"error": "fake engine failed", "error_type": "generation"}
    assert value(served.metrics(), "tgi_request_failure", err="generation") == 1
    assert served.service.in_flight == 0


# Admission


@pytest.mark.parametrize(
    ("path", "body"),
    [("/generate", generate(2)), ("/", generate(2)), ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2})],
    ids=["generate", "compat", "completions"],
)
def test_full_admission_is_429_json(served, path, body):
    slots = [served.service.admit() for _ in range(LIMIT)]
    assert_tgi_error(served.client.post(path, json=body), 429, "overloaded")
    assert value(served.metrics(), "tgi_request_failure", err="overloaded") == 1
    assert served.engine.submitted == []
    for slot in slots:
        slot.release()
    assert served.client.post(path, json=body).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate_stream", generate(2)),
        ("/", {**generate(2), "stream": True}),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "stream": True}),
    ],
    ids=["generate_stream", "compat", "completions"],
)
def test_full_admission_is_an_error_event_in_a_200_stream(served, path, body):
    with served.service.admit(), served.service.admit():
        r = served.client.post(path, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert sse(r) == [{"error": "Model is overloaded", "error_type": "overloaded"}]
    assert value(served.metrics(), "tgi_request_failure", err="overloaded") == 1
    assert served.engine.submitted == [] and served.service.in_flight == 0


def test_requests_held_by_the_engine_fill_admission_and_the_gauges(served):
    served.engine.gate.clear()
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(served.client.post("/generate", json=generate(3))))
        for _ in range(LIMIT)
    ]
    for t in threads:
        t.start()
    served.wait_until(lambda: served.service.in_flight == LIMIT and len(served.engine.submitted) == LIMIT)
    assert_tgi_error(served.client.post("/generate", json=generate(3)), 429, "overloaded")
    samples = served.metrics()  # one held at the gate, one queued behind it
    assert (value(samples, "tgi_queue_size"), value(samples, "tgi_batch_current_size")) == (1, 1)
    assert value(samples, "tgi_batch_current_max_tokens") == 3 + 3
    served.engine.gate.set()
    for t in threads:
        t.join(10)
    assert [r.status_code for r in answers] == [200, 200]
    samples = served.metrics()
    assert (value(samples, "tgi_queue_size"), value(samples, "tgi_batch_current_size")) == (0, 0)
    assert served.service.in_flight == 0


@pytest.mark.parametrize(
    ("path", "body", "fail"),
    [
        ("/generate", generate(3), False),
        ("/generate_stream", generate(3), False),
        ("/generate", generate(3), True),
        ("/generate_stream", generate(3), True),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "stream": True}, True),
    ],
    ids=["json", "stream", "json-424", "stream-error", "completions-stream-error"],
)
def test_every_answer_gives_its_slot_back(served, path, body, fail):
    served.engine.fail_after = 1 if fail else None
    for _ in range(LIMIT + 1):  # one more than the limit: a leaked slot would refuse the last
        r = served.client.post(path, json=body)
        assert r.status_code == (424 if fail and path == "/generate" else 200)
        assert "overloaded" not in r.text
    assert served.service.in_flight == 0


# OpenAI compatibility: the fields real clients send (GuideLLM, vLLM's benchmarks), and the chat route

CHAT = [{"role": "system", "content": "Hi"}, {"role": "user", "content": PROMPT}]


def chat(n: int = 3, **fields: Any) -> dict[str, Any]:
    return {"messages": CHAT, "max_tokens": n, **fields}


def test_chat_answers_in_openai_shape_through_the_chat_template(served, tiny_tokenizer):
    r = served.client.post("/v1/chat/completions", json=chat(3))
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, schema_of("/v1/chat/completions", "post", "200", "application/json"))
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": " the cat"},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    templated = tiny_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    prompt_ids = tiny_tokenizer(templated, add_special_tokens=False).input_ids
    assert prompt_ids.count(tiny_tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    assert body["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 3,
        "total_tokens": len(prompt_ids) + 3,
    }
    (stream,) = served.engine.submitted
    assert stream.request.input_ids == prompt_ids


def test_chat_stream_sends_deltas_running_usage_and_done(served):
    options = {"include_usage": True, "continuous_usage_stats": True}
    events = sse(served.client.post("/v1/chat/completions", json=chat(3, stream=True, stream_options=options)))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, schema_of("/v1/chat/completions", "post", "200", "text/event-stream"))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": t} for t in (" the", " c", "at")
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:3]] == [None, None, "length"]
    assert [c["usage"]["completion_tokens"] for c in chunks[:3]] == [1, 2, 3]
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 3
    plain = sse(served.client.post("/v1/chat/completions", json=chat(3, stream=True)))
    assert plain[-1] == "[DONE]" and all("usage" not in c for c in plain[:-1]) and len(plain) == 4


def test_chat_reports_eos_as_stop_in_the_stream(served, script):
    served.engine.script = [script[0], EOS]
    chunks = sse(served.client.post("/v1/chat/completions", json=chat(8, stream=True)))[:-1]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == [" the", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("stream", [False, True])
def test_ignore_eos_runs_to_the_cap(served, script, path, stream):
    """GuideLLM's fixed-length requests: EOS does not end them. The cap may come as max_completion_tokens."""
    served.engine.script = [script[0], EOS]
    base = {"prompt": PROMPT} if path == "/v1/completions" else {"messages": CHAT}
    body = {**base, "max_completion_tokens": 6, "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = served.client.post(path, json=body)
    assert r.status_code == 200, r.text
    usage = sse(r)[-2]["usage"] if stream else r.json()["usage"]
    assert usage["completion_tokens"] == 6
    (submitted,) = served.engine.submitted
    assert submitted.generated == 6 and submitted.request.params.max_new_tokens == 6


# What GuideLLM 0.8.1, vLLM's benchmark_serving and OpenAI's SDK send besides the prompt: all accepted.
CLIENT_FIELDS = {
    "model": "test/fake-model",
    "max_tokens": 4,
    "max_completion_tokens": 4,
    "ignore_eos": True,
    "min_tokens": 4,
    "stop": None,
    "user": "bench",
    "n": 1,
    "seed": 7,
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": -1,
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
    "stream": False,
    "stream_options": {"include_usage": True},
}


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/v1/completions", {"prompt": PROMPT, "logprobs": None, "echo": False, "best_of": 1, "suffix": None}),
        ("/v1/completions", {"prompt": [PROMPT], "logprobs": False, "stop": "\n\n"}),
        ("/v1/chat/completions", {"messages": CHAT, "logprobs": False, "top_logprobs": 0, "tools": None}),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
                "response_format": {"type": "text"},
                "tool_choice": "none",
                "parallel_tool_calls": False,
            },
        ),
    ],
    ids=["completions", "completions-list-prompt", "chat", "chat-parts"],
)
def test_fields_real_clients_send_are_accepted(served, path, extra):
    r = served.client.post(path, json={**CLIENT_FIELDS, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 4


# Each would change the answer in a way the service cannot honour: 422 naming the field, nothing generated.
OPENAI_REFUSED = {
    "n": ("/v1/completions", {"prompt": PROMPT, "n": 2}, "n > 1"),
    "caps differ": ("/v1/chat/completions", chat(4, max_completion_tokens=5), "max_completion_tokens"),
    "presence_penalty": ("/v1/completions", {"prompt": PROMPT, "presence_penalty": 0.5}, "presence_penalty"),
    "frequency_penalty": ("/v1/chat/completions", chat(frequency_penalty=1.0), "frequency_penalty"),
    "logit_bias": ("/v1/completions", {"prompt": PROMPT, "logit_bias": {"5": 10}}, "logit_bias"),
    "completion logprobs": ("/v1/completions", {"prompt": PROMPT, "logprobs": 0}, "logprobs"),
    "echo": ("/v1/completions", {"prompt": PROMPT, "echo": True}, "echo"),
    "best_of": ("/v1/completions", {"prompt": PROMPT, "best_of": 2}, "best_of"),
    "chat logprobs": ("/v1/chat/completions", chat(logprobs=True), "logprobs"),
    "tools": ("/v1/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    "response_format": ("/v1/chat/completions", chat(response_format={"type": "json_object"}), "response_format"),
    "image part": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages.0.content",
    ),
    "tool role": ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    "no messages": ("/v1/chat/completions", {"messages": []}, "messages"),
    "unknown field": ("/v1/chat/completions", chat(best_of=2), "best_of"),
    "min_tokens over the cap": ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "min_tokens": 3}, "min_tokens"),
}


@pytest.mark.parametrize("case", list(OPENAI_REFUSED))
def test_what_cannot_be_honoured_is_422_naming_the_field(served, case):
    path, body, field = OPENAI_REFUSED[case]
    r = served.client.post(path, json=body)
    assert_tgi_error(r, 422, "validation")
    assert field in r.json()["error"], r.json()
    assert served.engine.submitted == []
    assert (
        served.client.post(path, json=chat(2) if "chat" in path else {"prompt": PROMPT, "max_tokens": 2}).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [(None, "no chat template"), ("{{ raise_exception('roles must alternate') }}", "roles must alternate")],
    ids=["no template", "template refuses"],
)
def test_chat_the_template_cannot_write_is_422(tiny_model, script, template, message):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = template
    app, _, engine = build(tokenizer, script)
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json=chat(2))
        assert_tgi_error(r, 422, "validation")
        assert message in r.json()["error"]
        assert engine.submitted == []


# Metrics


def test_a_success_moves_the_request_metrics(served):
    served.client.post("/generate", json=generate(4))
    served.client.post("/generate_stream", json=generate(2))
    samples = served.metrics()
    assert value(samples, "tgi_request_count") == 2
    assert value(samples, "tgi_request_success") == 2
    assert value(samples, "tgi_request_generated_tokens_sum") == 6
    assert value(samples, "tgi_request_max_new_tokens_sum") == 6
    assert value(samples, "tgi_request_input_length_sum") == 6  # 3 prompt tokens each
    assert value(samples, "tgi_request_duration_count") == 2
    assert value(samples, "tgi_request_mean_time_per_token_duration_count") == 2
    assert value(samples, "tgi_request_duration_bucket", le="+Inf") == 2


def test_metrics_page_speaks_prometheus_text_with_tgi_names(served):
    r = served.client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    _, types = parse(r.text)
    assert types["tgi_request_count"] == "counter" and "tgi_request_count_total" not in r.text
    assert types["tgi_queue_size"] == "gauge" and types["tgi_request_duration"] == "histogram"


# Clients that leave (driven through ASGI directly: TestClient cannot hang up mid-request)


async def call_and_leave(
    app: FastAPI, path: str, body: dict[str, Any], leave_after_chunks: int, then: Callable[[], bool]
) -> list[dict]:
    """POST `body`, then disconnect once `leave_after_chunks` body chunks arrived (0: at once); once the app has
    answered, wait for `then` with the loop still running. The ASGI messages the app sent."""
    sent: list[dict] = []
    left = asyncio.Event()
    if leave_after_chunks == 0:
        left.set()
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        chunks = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
        if len(chunks) >= leave_after_chunks:
            left.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    async with asyncio.timeout(10):
        while not then():
            await asyncio.sleep(0.005)
    return sent


def test_client_leaving_a_non_streaming_request_gets_499_and_cancels_it(tiny_tokenizer, script):
    app, service, engine = build(tiny_tokenizer, script)
    engine.gate.clear()  # the request waits in the engine; its client gives up
    try:
        sent = asyncio.run(
            call_and_leave(app, "/generate", generate(4), leave_after_chunks=0, then=lambda: bool(engine.cancelled))
        )
        assert sent[0]["status"] == 499
        assert service.in_flight == 0
        (stream,) = engine.submitted
        assert engine.cancelled == [stream.request.request_id] and stream.generated == 0
        assert value(parse(service.metrics.render())[0], "tgi_request_success") == 0
    finally:
        engine.stop()


def test_client_leaving_a_stream_cancels_it_in_the_engine(tiny_tokenizer, script):
    app, service, engine = build(tiny_tokenizer, script)
    engine.gate.clear()
    engine.hold_after = 1  # one token, then the engine waits: the client reads it and leaves
    try:
        sent = asyncio.run(
            call_and_leave(
                app, "/generate_stream", generate(8), leave_after_chunks=1, then=lambda: bool(engine.cancelled)
            )
        )
        assert sent[0]["status"] == 200
        assert len([m for m in sent if m.get("body")]) == 1
        (stream,) = engine.submitted
        assert engine.cancelled == [stream.request.request_id] and stream.generated == 1
        assert service.in_flight == 0
        assert value(parse(service.metrics.render())[0], "tgi_request_success") == 0
    finally:
        engine.stop()
