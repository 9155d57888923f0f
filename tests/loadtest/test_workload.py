"""The request plan: synthetic prompts of the asked lengths in the tiny model's tokenizer, datasets with their
replies' lengths as caps, the shared prefix, the seed, and the order Locust sends the plan in."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from llm_loadtest.lengths import parse_lengths
from llm_loadtest.synthetic import PromptMaker
from llm_loadtest.workload import (
    PlanCursor,
    PlannedRequest,
    WorkloadError,
    WorkloadSpec,
    build_plan,
    read_plan,
    write_plan,
)

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "sharegpt-sample.json")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def tokens(tokenizer, text: str) -> int:
    """Counted here, independently of the plan: the prompt as the tokenizer encodes it, without BOS."""
    return len(tokenizer.encode(text, add_special_tokens=False))


def synthetic(tiny_model, **kw) -> list[PlannedRequest]:
    return build_plan(WorkloadSpec(tokenizer=str(tiny_model), **kw))


def test_fixed_input_and_output_lengths_are_exact(tiny_model, tokenizer):
    plan = synthetic(tiny_model, input_tokens="48", output_tokens="24", num_prompts=60)
    assert len(plan) == 60 and [p.index for p in plan] == list(range(60))
    assert {tokens(tokenizer, p.prompt) for p in plan} == {48}
    assert {p.input_tokens for p in plan} == {48} and {p.max_tokens for p in plan} == {24}
    assert len({p.prompt for p in plan}) == 60  # random words: no two prompts alike


def test_uniform_lengths_within_one_token_and_spread_over_the_range(tiny_model, tokenizer):
    plan = synthetic(tiny_model, input_tokens="uniform:5:60", output_tokens="uniform:1:9", num_prompts=200)
    measured = [tokens(tokenizer, p.prompt) for p in plan]
    assert measured == [p.input_tokens for p in plan]  # what the plan records is what the tokenizer says
    assert 4 <= min(measured) <= 7 and 58 <= max(measured) <= 61
    assert {p.max_tokens for p in plan} == set(range(1, 10))


def test_normal_lengths_have_their_mean_and_spread(tiny_model, tokenizer):
    plan = synthetic(tiny_model, input_tokens="normal:40:8", output_tokens="normal:30:5", num_prompts=400)
    measured = [tokens(tokenizer, p.prompt) for p in plan]
    assert measured == [p.input_tokens for p in plan]
    assert abs(statistics.mean(measured) - 40) < 1.5 and abs(statistics.stdev(measured) - 8) < 1.5
    caps = [p.max_tokens for p in plan]
    assert abs(statistics.mean(caps) - 30) < 1 and abs(statistics.stdev(caps) - 5) < 1


def test_shared_prefix_opens_every_prompt_and_adds_its_length(tiny_model, tokenizer):
    plan = synthetic(tiny_model, input_tokens="uniform:10:20", prefix_tokens=16, num_prompts=50)
    first_words = {" ".join(p.prompt.split()[:16]) for p in plan}
    assert len(first_words) == 1  # one prefix for all
    (prefix,) = first_words
    assert tokens(tokenizer, prefix) == 16
    assert all(26 - 1 <= tokens(tokenizer, p.prompt) <= 36 + 1 for p in plan)
    assert len({p.prompt.split()[16] for p in plan}) > 1  # after it, the prompts differ


@pytest.mark.parametrize("lengths", ["17", "uniform:1:90", "normal:50:20"])
@pytest.mark.parametrize("prefix", [0, 12])
def test_each_prompt_is_its_drawn_length_within_one_token(tokenizer, lengths, prefix):
    """Per request: the length drawn from the distribution against the prompt's tokens counted here."""
    rng = random.Random(11)
    drawn = [parse_lengths(lengths).sample(rng) for _ in range(150)]
    maker = PromptMaker(tokenizer, random.Random(12), prefix)
    made = maker.make(drawn)
    assert tokens(tokenizer, maker.prefix_text()) == prefix if prefix else maker.prefix_text() == ""
    for n, (text, counted) in zip(drawn, made, strict=True):
        assert abs(tokens(tokenizer, text) - (prefix + n)) <= 1 and counted == tokens(tokenizer, text)
        assert text.startswith(maker.prefix_text())


def test_same_seed_same_plan_other_seed_another(tiny_model):
    kw = {"input_tokens": "uniform:8:30", "output_tokens": "normal:20:6", "prefix_tokens": 4, "num_prompts": 30}
    a, b = synthetic(tiny_model, seed=3, **kw), synthetic(tiny_model, seed=3, **kw)
    assert a == b
    c = synthetic(tiny_model, seed=4, **kw)
    assert [p.prompt for p in c] != [p.prompt for p in a] and [p.max_tokens for p in c] != [p.max_tokens for p in a]


def test_sharegpt_first_turns_with_their_replies_lengths_as_caps(tiny_model, tokenizer):
    plan = build_plan(WorkloadSpec(dataset=SAMPLE, tokenizer=str(tiny_model), seed=1))
    by_prompt = {p.prompt: p for p in plan}
    # The conversation without a reply has no length to ask for: left out.
    assert set(by_prompt) == {
        "Name three uses for a paper clip.",
        "What is a list in Python?",
        "Write one line about the sea.",
        "Why is the sky blue?",
    }
    clip = by_prompt["Name three uses for a paper clip."]
    reply = "Hold papers together, reset a small device, and pick a simple lock."
    assert (clip.max_tokens, clip.input_tokens) == (tokens(tokenizer, reply), tokens(tokenizer, clip.prompt))
    # Two turns: the first human turn and the reply to it.
    assert by_prompt["What is a list in Python?"].max_tokens == tokens(
        tokenizer, "An ordered, mutable sequence of items."
    )
    assert all(p.messages is None for p in plan)


def test_sharegpt_conversations_for_chat_targets(tiny_model, tokenizer):
    plan = build_plan(WorkloadSpec(dataset=SAMPLE, tokenizer=str(tiny_model), seed=1), chat=True)
    two = next(p for p in plan if p.prompt == "What is a list in Python?")
    assert [m["role"] for m in two.messages] == ["user", "assistant", "user"]
    assert two.messages[-1]["content"] == "And a tuple?"
    # The reply to the last human turn sets the cap; the turns' contents, the input length.
    assert two.max_tokens == tokens(tokenizer, "An ordered sequence that cannot be changed once made.")
    assert two.input_tokens == sum(tokens(tokenizer, m["content"]) for m in two.messages)
    system = next(p for p in plan if p.prompt == "Why is the sky blue?")
    assert system.messages[0] == {"role": "system", "content": "Answer briefly."}


def test_dataset_without_tokenizer_keeps_the_step_cap_and_every_conversation():
    plan = build_plan(WorkloadSpec(dataset=SAMPLE, seed=1))
    assert len(plan) == 5 and {(p.max_tokens, p.input_tokens) for p in plan} == {(None, None)}
    assert build_plan(WorkloadSpec(dataset=SAMPLE, seed=1)) == plan
    assert [p.prompt for p in build_plan(WorkloadSpec(dataset=SAMPLE, seed=2))] != [p.prompt for p in plan]


def test_num_prompts_samples_the_dataset_and_output_tokens_override_replies(tiny_model):
    plan = build_plan(WorkloadSpec(dataset=SAMPLE, tokenizer=str(tiny_model), output_tokens="7", num_prompts=3))
    assert len(plan) == 3 and {p.max_tokens for p in plan} == {7}


def test_output_tokens_alone_caps_the_prompt_set():
    plan = build_plan(WorkloadSpec(output_tokens="uniform:4:8", prompts="same", num_prompts=10))
    assert {p.prompt for p in plan} == {"Write a short story about a robot who learns to paint."}
    assert all(4 <= p.max_tokens <= 8 for p in plan) and all(p.input_tokens is None for p in plan)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (WorkloadSpec(input_tokens="32"), "needs --tokenizer"),
        (WorkloadSpec(dataset=SAMPLE, input_tokens="32", tokenizer="x"), "give one"),
        (WorkloadSpec(output_tokens="uniform:9:2"), "--output-tokens"),
        (WorkloadSpec(prefix_tokens=8, output_tokens="4"), "needs --input-tokens"),
        (WorkloadSpec(dataset="/nonexistent/file.json"), "cannot read the file"),
        (WorkloadSpec(input_tokens="8", tokenizer="/nonexistent/tokenizer"), "cannot load it"),
    ],
)
def test_errors(spec, message):
    with pytest.raises(WorkloadError, match=message):
        build_plan(spec)


def test_plan_file_round_trip(tmp_path, tiny_model):
    plan = build_plan(WorkloadSpec(dataset=SAMPLE, tokenizer=str(tiny_model)), chat=True)
    write_plan(tmp_path / "workload.jsonl", plan)
    assert read_plan(tmp_path / "workload.jsonl") == plan
    (tmp_path / "other.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(WorkloadError, match="not a plan"):
        read_plan(tmp_path / "other.jsonl")


def test_cursor_sends_in_order_and_splits_between_processes():
    plan = [PlannedRequest(i, f"p{i}") for i in range(5)]
    one = PlanCursor(plan)
    assert [one.next().index for _ in range(7)] == [0, 1, 2, 3, 4, 0, 1]
    a, b = PlanCursor(plan, 0, 2), PlanCursor(plan, 1, 2)
    assert [a.next().index for _ in range(3)] == [0, 2, 4] and [b.next().index for _ in range(2)] == [1, 3]
