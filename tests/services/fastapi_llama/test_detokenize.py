"""Incremental detokenization: whole characters only, and invalid byte runs never stall the stream."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from fastapi_llama.detokenize import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_multibyte_characters_are_never_split(tokenizer):
    text = "naïve café — 日本語 🙂 done"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.add(i) for i in ids]
    assert "".join(deltas) == text == detok.text
    assert all("\ufffd" not in d for d in deltas)


def test_invalid_byte_runs_are_flushed(tokenizer):
    # Tokens that decode to lone UTF-8 continuation bytes never form a character.
    lone = [i for i in range(len(tokenizer)) if tokenizer.decode([i]) == "\ufffd"][:1]
    assert lone, "the byte-level vocabulary has single-byte tokens"
    detok = IncrementalDetokenizer(tokenizer)
    ids = lone * 40 + tokenizer(" end", add_special_tokens=False).input_ids
    "".join(detok.add(i) for i in ids)
    assert detok.text.endswith(" end")
    assert detok._read_offset >= 40  # the window kept moving: decoding cost stays flat
