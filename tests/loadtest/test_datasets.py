"""Datasets: ShareGPT-format JSON and JSONL, role/content turns, plain prompt files, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_loadtest.datasets import DatasetError, Turn, load_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sharegpt-sample.json"


def test_sharegpt_json_sample():
    ds = load_dataset(SAMPLE)
    # 7 entries: one without a human turn and one that is no conversation are skipped and counted.
    assert (len(ds.conversations), ds.skipped, ds.plain) == (5, 2, False)
    first = ds.conversations[0]
    assert first.first_prompt() == "Name three uses for a paper clip."
    assert first.first_reply() == "Hold papers together, reset a small device, and pick a simple lock."


def test_first_human_turn_and_the_conversation_up_to_the_last_one():
    two_turns = load_dataset(SAMPLE).conversations[1]
    assert two_turns.first_prompt() == "What is a list in Python?"
    assert two_turns.first_reply() == "An ordered, mutable sequence of items."
    assert two_turns.up_to_last_prompt() == (
        Turn("user", "What is a list in Python?"),
        Turn("assistant", "An ordered, mutable sequence of items."),
        Turn("user", "And a tuple?"),
    )
    assert two_turns.last_reply() == "An ordered sequence that cannot be changed once made."


def test_role_content_turns_and_a_system_turn():
    ds = load_dataset(SAMPLE)
    assert ds.conversations[2].first_prompt() == "Write one line about the sea."
    system_first = ds.conversations[3]
    assert system_first.turns[0] == Turn("system", "Answer briefly.")
    assert system_first.first_prompt() == "Why is the sky blue?"
    assert system_first.up_to_last_prompt()[0].role == "system"  # a chat request keeps the system turn
    assert ds.conversations[4].first_reply() is None  # a human turn with no reply


def test_jsonl_reads_as_the_json_list(tmp_path):
    entries = json.loads(SAMPLE.read_text())
    path = tmp_path / "sample.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + "\n")
    assert load_dataset(path) == load_dataset(SAMPLE)


def test_plain_prompt_file_one_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("first prompt\n\n  second prompt  \n")
    ds = load_dataset(path)
    assert ds.plain and [c.first_prompt() for c in ds.conversations] == ["first prompt", "second prompt"]
    assert all(c.first_reply() is None for c in ds.conversations)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2", "not JSON or JSONL"),
        ('{"conversations": []}\n{"x": 1}\n', "no conversation with a human turn"),
        ('{"a": 1}\nnot json\n', "not JSON or JSONL"),
        ("\n \n", "no prompts in it"),
    ],
)
def test_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read the file"):
        load_dataset(tmp_path / "missing.json")
