"""Each generation parameter TGI defines is honoured."""

from __future__ import annotations

import httpx


def generate(server, inputs: str = "Hello there", **parameters) -> dict:
    r = httpx.post(f"{server.url}/generate", json={"inputs": inputs, "parameters": parameters}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_greedy_is_deterministic(naive_server):
    a = generate(naive_server, max_new_tokens=12)
    b = generate(naive_server, max_new_tokens=12)
    assert a["generated_text"] == b["generated_text"]
    assert a["details"]["seed"] is None


def test_seed_makes_sampling_repeatable_and_is_reported(naive_server):
    a = generate(naive_server, max_new_tokens=16, do_sample=True, seed=7)
    b = generate(naive_server, max_new_tokens=16, do_sample=True, seed=7)
    c = generate(naive_server, max_new_tokens=16, do_sample=True, seed=8)
    assert a["generated_text"] == b["generated_text"] != c["generated_text"]
    assert a["details"]["seed"] == 7


def test_temperature_alone_turns_sampling_on(naive_server):
    # As in TGI: a warper implies sampling, and a sampled request reports the seed it drew.
    out = generate(naive_server, max_new_tokens=4, temperature=0.7)
    assert isinstance(out["details"]["seed"], int)


def test_top_k_one_equals_greedy(naive_server):
    greedy = generate(naive_server, max_new_tokens=12)
    top1 = generate(naive_server, max_new_tokens=12, do_sample=True, top_k=1, seed=3)
    assert greedy["generated_text"] == top1["generated_text"]


def test_repetition_penalty_changes_output(naive_server):
    plain = generate(naive_server, max_new_tokens=24)
    penalised = generate(naive_server, max_new_tokens=24, repetition_penalty=5.0)
    assert plain["generated_text"] != penalised["generated_text"]


def test_stop_sequence_ends_generation(naive_server):
    tokens = [t["text"] for t in generate(naive_server, max_new_tokens=24)["details"]["tokens"]]
    stop = tokens[2]  # the third token's text: generation must end there or earlier
    out = generate(naive_server, max_new_tokens=24, stop=[stop])
    assert out["details"]["finish_reason"] == "stop_sequence"
    assert out["generated_text"].endswith(stop)  # included, as TGI does
    assert out["details"]["generated_tokens"] <= 3


def test_return_full_text_prepends_prompt(naive_server):
    out = generate(naive_server, inputs="Hello there", max_new_tokens=4, return_full_text=True)
    plain = generate(naive_server, inputs="Hello there", max_new_tokens=4)
    assert out["generated_text"] == "Hello there" + plain["generated_text"]


def test_truncate_keeps_the_last_tokens(naive_server):
    long_prompt = "alpha beta gamma delta " * 40  # beyond --max-input-tokens 64
    out = generate(naive_server, inputs=long_prompt, max_new_tokens=2, truncate=10)
    assert out["details"]["generated_tokens"] == 2


def test_details_false_omits_details(naive_server):
    out = generate(naive_server, max_new_tokens=3, details=False)
    assert "details" not in out


def test_default_max_new_tokens_fills_the_total_budget(naive_server, tiny_model):
    from transformers import AutoTokenizer

    input_length = len(AutoTokenizer.from_pretrained(tiny_model)("Hi").input_ids)
    # TGI's default: max_total_tokens - input_length (the fixture's server: 1024 total).
    r = httpx.post(f"{naive_server.url}/generate", json={"inputs": "Hi"}, timeout=120)
    details = r.json()["details"]
    assert details["finish_reason"] in ("length", "eos_token")
    if details["finish_reason"] == "length":
        assert details["generated_tokens"] == 1024 - input_length
