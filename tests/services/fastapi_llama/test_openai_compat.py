"""The fields benchmark clients send to fix the output length (vLLM's `ignore_eos`, `min_tokens`; OpenAI's
`max_completion_tokens`), on the tiny model in every batching mode: create_app over the real engines, in process.

The tiny model hardly ever ends on its own (no EOS in 576 two-word prompts, greedy, 24 tokens), so these tests
give its EOS row of the output layer the weights of the token it picks most often, scaled by 3: greedy decoding
then ends at once, and a test can tell a request that ignores EOS from one that never met it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from fastapi_llama.app import create_app
from fastapi_llama.cli import build_engine
from fastapi_llama.loading import load
from fastapi_llama.metrics import ServerMetrics
from fastapi_llama.service import Service
from fastapi_llama.settings import Settings
from tests.services.fastapi_llama.test_routes_inprocess import sse
from tests.support.openapi import schema_of, validate

PROMPT = "The quick brown fox"
CHAT = [{"role": "user", "content": PROMPT}]
N = 12


def eos_prone(tiny_model: Path) -> tuple[Any, Any]:
    model, tokenizer = load(str(tiny_model))
    ids = torch.tensor([tokenizer(PROMPT).input_ids])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
        favourite = Counter(out[0, ids.shape[1] :].tolist()).most_common(1)[0][0]
        model.lm_head.weight[tokenizer.eos_token_id] = model.lm_head.weight[favourite] * 3
    return model, tokenizer


@pytest.fixture(scope="module", params=["naive", "static", "continuous"])
def client(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[TestClient]:
    model, tokenizer = eos_prone(tiny_model)
    settings = Settings(model_id="tiny-eos", batching=request.param, max_batch_size=4, batch_wait_ms=5)
    engine = build_engine(settings, model, tokenizer)
    engine.start()
    engine.warmup()
    with TestClient(create_app(Service(settings, engine, tokenizer, ServerMetrics()))) as c:
        yield c


def mode(client: TestClient) -> str:
    return client.get("/info").json()["batching"]


def body(path: str, **fields: Any) -> dict[str, Any]:
    return {**({"prompt": PROMPT} if path == "/v1/completions" else {"messages": CHAT}), **fields}


PATHS = ["/v1/completions", "/v1/chat/completions"]


@pytest.mark.parametrize("path", PATHS)
def test_without_ignore_eos_the_model_ends_early(client, path):
    r = client.post(path, json=body(path, max_tokens=N))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    assert r.json()["usage"]["completion_tokens"] < N


@pytest.mark.parametrize("path", PATHS)
def test_ignore_eos_min_tokens_and_max_completion_tokens_give_exactly_the_cap(client, path):
    fields = {"max_completion_tokens": N, "ignore_eos": True, "min_tokens": N}
    r = client.post(path, json=body(path, **fields))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == N
    assert r.json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("path", PATHS)
def test_streamed_usage_equals_the_chunks_counted(client, path):
    fields = {"max_completion_tokens": N, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    r = client.post(path, json=body(path, **fields))
    events = sse(r)
    assert events[-1] == "[DONE]"
    chunks, final = events[:-2], events[-2]
    for chunk in events[:-1]:
        validate(chunk, schema_of(path, "post", "200", "text/event-stream"))
    assert len(chunks) == final["usage"]["completion_tokens"] == N
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("path", PATHS)
def test_min_tokens_holds_eos_back(client, path):
    r = client.post(path, json=body(path, max_tokens=N, min_tokens=5))
    if mode(client) == "continuous":  # its manager cannot hold EOS back per request
        assert r.status_code == 422 and "min_tokens" in r.json()["error"]
        assert client.post(path, json=body(path, max_tokens=N, min_tokens=5, ignore_eos=True)).status_code == 200
        return
    assert r.status_code == 200, r.text
    # EOS was held back for 5 tokens, then the EOS-prone model chose it at once.
    assert r.json()["usage"]["completion_tokens"] == 6
    assert r.json()["choices"][0]["finish_reason"] == "stop"
