"""HF_TOKEN is read from the environment only, and never written to the logs or served back."""

from __future__ import annotations

import secrets

import httpx

from tests.support.servers import fastapi_llama

# Made at run time, so that no token-shaped string is committed (secret scanners would flag one).
SECRET = "hf_" + secrets.token_hex(16)


def test_hf_token_is_never_logged_nor_served(tiny_model, server_tmp, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with fastapi_llama(server_tmp, "--max-concurrent-requests", "2") as server:
        pages = [httpx.get(f"{server.url}{path}", timeout=10).text for path in ("/info", "/metrics", "/openapi.json")]
        # Logged paths too: a failure, a refusal and a success.
        httpx.post(f"{server.url}/generate", json={"inputs": ""}, timeout=10)
        httpx.post(f"{server.url}/generate", content=b"\xff", headers={"content-type": "application/json"})
        httpx.post(f"{server.url}/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}, timeout=30)
        log = server.log()
    assert "ready" in log  # the log is the real one
    for text in (*pages, log):
        assert SECRET not in text
