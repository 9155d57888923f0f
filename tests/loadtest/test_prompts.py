"""Prompt sets: the article's one prompt, the shipped set, a file; and the errors a user can hit."""

from __future__ import annotations

import pytest

from llm_loadtest.prompts import SAME_PROMPT, PromptError, load_prompts


def test_same_is_one_prompt_every_time():
    prompts = load_prompts("same")
    assert prompts.items == [SAME_PROMPT]
    assert {prompts.next() for _ in range(5)} == {SAME_PROMPT}


def test_default_set_is_shipped_and_drawn_reproducibly():
    a, b = load_prompts("default"), load_prompts("default")
    assert len(a.items) > 1 and all(p == p.strip() and p for p in a.items)
    draws = [a.next() for _ in range(20)]
    assert draws == [b.next() for _ in range(20)]  # seeded: two runs send the same prompts
    assert set(draws) <= set(a.items) and len(set(draws)) > 1


def test_file_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("  first prompt \n\n\t\nsecond prompt\n", encoding="utf-8")
    assert load_prompts(str(path)).items == ["first prompt", "second prompt"]


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match="cannot read the file"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PromptError, match="not UTF-8"):
        load_prompts(str(path))


def test_blank_file_is_an_error_and_a_value_error(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no prompts in it"):
        load_prompts(str(path))
