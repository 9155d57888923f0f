"""TGI's own client library (huggingface_hub's InferenceClient) works against the service unchanged."""

from __future__ import annotations

import pytest
from huggingface_hub import InferenceClient, constants


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch, naive_server):
    # HF_HUB_OFFLINE blocks every request of the client, loopback included; these tests talk only to our server.
    assert naive_server.url.startswith("http://127.0.0.1:")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_inference_client_streams_with_details(naive_server):
    client = InferenceClient(base_url=naive_server.url)
    chunks = list(client.text_generation("Hello", max_new_tokens=5, stream=True, details=True))
    assert len(chunks) == 5
    assert chunks[-1].details.finish_reason == "length"
    assert chunks[-1].generated_text == "".join(c.token.text for c in chunks)


def test_inference_client_generate(naive_server):
    client = InferenceClient(base_url=naive_server.url)
    out = client.text_generation("Hello", max_new_tokens=6, details=True, seed=3, do_sample=True)
    assert out.details.generated_tokens == 6 and out.details.seed == 3
