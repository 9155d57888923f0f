"""Bad input gets a 4xx in TGI's error shape, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.support.openapi import named, validate
from tests.support.sse import stream

OK = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}

BAD_BODIES = {
    "missing inputs": {"parameters": {"max_new_tokens": 2}},
    "empty inputs": {"inputs": "", "parameters": {"max_new_tokens": 2}},
    "blank inputs": {"inputs": "   ", "parameters": {"max_new_tokens": 2}},
    "inputs not a string": {"inputs": 42},
    "max_new_tokens zero": {"inputs": "Hi", "parameters": {"max_new_tokens": 0}},
    "max_new_tokens negative": {"inputs": "Hi", "parameters": {"max_new_tokens": -5}},
    "max_new_tokens beyond total": {"inputs": "Hi", "parameters": {"max_new_tokens": 5000}},
    "max_new_tokens as string": {"inputs": "Hi", "parameters": {"max_new_tokens": "10"}},
    "max_new_tokens float": {"inputs": "Hi", "parameters": {"max_new_tokens": 2.5}},
    "max_new_tokens huge": {"inputs": "Hi", "parameters": {"max_new_tokens": 10**30}},
    "temperature zero": {"inputs": "Hi", "parameters": {"temperature": 0}},
    "top_p above one": {"inputs": "Hi", "parameters": {"top_p": 1.5}},
    "negative seed": {"inputs": "Hi", "parameters": {"seed": -1}},
    "five stop sequences": {"inputs": "Hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}},
    "unknown parameter": {"inputs": "Hi", "parameters": {"max_new_token": 3}},
    "unknown top-level field": {"inputs": "Hi", "stream": True},
    "best_of unsupported": {"inputs": "Hi", "parameters": {"best_of": 2}},
    "decoder_input_details unsupported": {"inputs": "Hi", "parameters": {"decoder_input_details": True}},
    "top_n_tokens unsupported": {"inputs": "Hi", "parameters": {"top_n_tokens": 3}},
    "watermark unsupported": {"inputs": "Hi", "parameters": {"watermark": True}},
    "grammar unsupported": {"inputs": "Hi", "parameters": {"grammar": {"type": "json", "value": {}}}},
    "input too long": {"inputs": "word " * 500, "parameters": {"max_new_tokens": 2}},
    "parameters not an object": {"inputs": "Hi", "parameters": [1, 2]},
}


def assert_tgi_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    validate(response.json(), named("ErrorResponse"))
    assert response.json()["error_type"] == error_type
    assert response.json()["error"]


@pytest.mark.parametrize("route", ["/generate", "/generate_stream"])
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_body_gets_422(naive_server, route, case):
    response = httpx.post(naive_server.url + route, json=BAD_BODIES[case])
    assert_tgi_error(response, 422, "validation")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"content-type": "application/json"}),
        (b"\xff\xfe\xfa", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b'{"inputs": "Hi"}', {"content-type": "text/plain"}),
        (b"[1, 2, 3]", {"content-type": "application/json"}),
    ],
    ids=["bad json", "invalid utf-8", "empty body", "wrong content type", "json array"],
)
def test_unparseable_bodies_get_422(naive_server, content, headers):
    assert_tgi_error(httpx.post(f"{naive_server.url}/generate", content=content, headers=headers), 422, "validation")


def test_payload_limit_gets_413(naive_server):
    response = httpx.post(f"{naive_server.url}/generate", json={"inputs": "x" * 3_000_000})
    assert_tgi_error(response, 413, "payload_too_large")


def test_completions_bad_inputs(naive_server):
    for body in (
        {"prompt": ""},
        {"prompt": ["a", "b"]},
        {"prompt": "Hi", "max_tokens": 0},
        {"prompt": "Hi", "suffix": "!"},
        {"prompt": "Hi", "n": 3},
        {"max_tokens": 3},
    ):
        assert_tgi_error(httpx.post(f"{naive_server.url}/v1/completions", json=body), 422, "validation")


def test_unknown_route_is_404_in_tgi_shape(naive_server):
    response = httpx.get(f"{naive_server.url}/nope")
    assert response.status_code == 404 and response.json()["error_type"] == "not_found"


def test_server_still_serves_after_bad_input(naive_server):
    for body in BAD_BODIES.values():
        httpx.post(f"{naive_server.url}/generate", json=body)
    assert httpx.get(f"{naive_server.url}/health").status_code == 200
    status, events = stream(f"{naive_server.url}/generate_stream", OK)
    assert status == 200 and len(events) == 2
