"""Admission before tokenization, and tokenization off the event loop: a refused request (429, or an overload event
in a stream) costs no tokenization, and a huge prompt being tokenized does not stall /health or other requests.
In process over a fake engine, with the tiny model's real tokenizer behind a proxy that counts and can hold its
calls: holding one shows what the event loop does meanwhile, without timing anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fastapi_llama.app import create_app
from fastapi_llama.metrics import ServerMetrics
from fastapi_llama.service import Service
from fastapi_llama.settings import Settings
from tests.services.fastapi_llama.fake_engine import FakeEngine
from tests.support.prom import parse, value

LIMIT = 2
HUGE = "lorem ipsum " * 80_000  # 960 kB: under the 2 MB payload limit, far over the input token limit
SETTINGS = Settings(
    model_id="test/fake-model",
    max_concurrent_requests=LIMIT,
    max_input_tokens=32,
    max_total_tokens=64,
    payload_limit=2_000_000,
)
HOLD_LIMIT_S = 20  # how long a held call waits for the test at most; past it, it records that it was not released


@dataclass
class WatchedTokenizer:
    """The real tokenizer; counts the prompts it is asked to encode, and holds the encoding of a prompt longer than
    `hold_above` characters until `release` is set."""

    real: Any
    hold_above: int = 10**9
    calls: int = 0
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    released_in_time: bool | None = None

    def __call__(self, text: str, **kwargs: Any) -> Any:
        self.calls += 1
        if len(text) > self.hold_above:
            self.entered.set()
            self.released_in_time = self.release.wait(HOLD_LIMIT_S)
        return self.real(text, **kwargs)

    def __getattr__(self, name: str) -> Any:  # decode, eos_token_id, chat_template, ...
        return getattr(self.real, name)


@dataclass
class Served:
    client: TestClient
    service: Service
    tokenizer: WatchedTokenizer

    def failures(self, err: str) -> float:
        return value(parse(self.client.get("/metrics").text)[0], "tgi_request_failure", err=err)


@pytest.fixture
def served(tiny_tokenizer: Any) -> Iterator[Served]:
    tokenizer = WatchedTokenizer(tiny_tokenizer)
    script = tiny_tokenizer(" the cat sat", add_special_tokens=False).input_ids
    engine = FakeEngine(tiny_tokenizer, script)
    engine.start()
    service = Service(SETTINGS, engine, tokenizer, ServerMetrics())
    with TestClient(create_app(service)) as client:
        yield Served(client, service, tokenizer)


REFUSED = [
    ("/generate", {"inputs": HUGE, "parameters": {"max_new_tokens": 2}}),
    ("/generate_stream", {"inputs": HUGE, "parameters": {"max_new_tokens": 2}}),
    ("/v1/completions", {"prompt": HUGE, "max_tokens": 2, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": HUGE}], "max_tokens": 2}),
]


@pytest.mark.parametrize(("path", "body"), REFUSED, ids=[p for p, _ in REFUSED])
def test_a_full_server_refuses_without_tokenizing(served, path, body):
    slots = [served.service.admit() for _ in range(LIMIT)]
    r = served.client.post(path, json=body)
    if body.get("stream") or path == "/generate_stream":  # TGI's way: an error event in a 200 stream
        assert r.status_code == 200 and '"error_type":"overloaded"' in r.text.replace(" ", "")
    else:
        assert r.status_code == 429 and r.json()["error_type"] == "overloaded"
    assert served.tokenizer.calls == 0, "the prompt was tokenized before the request was refused"
    assert served.failures("overloaded") == 1
    for slot in slots:
        slot.release()


def test_health_and_other_requests_answer_while_a_huge_prompt_is_tokenized(served):
    served.tokenizer.hold_above = 100_000
    answers: list[httpx.Response] = []
    big = threading.Thread(
        target=lambda: answers.append(
            served.client.post("/generate", json={"inputs": HUGE, "parameters": {"max_new_tokens": 2}})
        )
    )
    big.start()
    try:
        assert served.tokenizer.entered.wait(30), "the huge prompt never reached the tokenizer"
        # The event loop is free while the huge prompt is in the tokenizer: health, and a whole small request.
        assert served.client.get("/health").status_code == 200
        small = served.client.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
        assert small.status_code == 200, small.text
        assert served.service.in_flight == 1  # the huge one holds its slot while it is validated
    finally:
        served.tokenizer.release.set()
        big.join(60)
    assert served.tokenizer.released_in_time, "the answers above waited for the tokenizer: it ran on the event loop"
    assert answers[0].status_code == 422 and "must have less than 32 tokens" in answers[0].json()["error"]
    assert served.service.in_flight == 0, "a request that fails validation gives its slot back"
    assert served.failures("validation") == 1
