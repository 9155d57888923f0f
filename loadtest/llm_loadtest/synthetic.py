"""Synthetic prompts of an exact length in the target's tokenizer.

A prompt is random words from the tokenizer's own vocabulary, each a single token with or without the space before
it, so that a prompt of N words is N tokens: BPE tokenizers split at spaces before merging, so a word never merges
with its neighbours. The length is checked by tokenizing the whole prompt and corrected where a tokenizer does
otherwise. Random words also keep prompts apart, so a server's prefix cache shares only the prefix asked for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

MAX_CANDIDATES = 8192  # vocabulary entries tried as words: low ids are a BPE vocabulary's common merges
MIN_WORDS = 16
FIX_ROUNDS = 8


class SyntheticError(ValueError):
    pass


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens of each text as the tokenizer encodes it without special tokens (no BOS, no chat template)."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def vocabulary_words(tokenizer: Any) -> list[str]:
    """Alphabetic vocabulary entries that are one token both at the start of a text and after a space."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special][: MAX_CANDIDATES * 4]
    decoded = tokenizer.batch_decode([[i] for i in ids])
    candidates = sorted({s.strip() for s in decoded if s.strip().isascii() and s.strip().isalpha()})
    candidates = [w for w in candidates if len(w) >= 2][:MAX_CANDIDATES]
    thrice = count_tokens(tokenizer, [f"{w} {w} {w}" for w in candidates])
    words = [w for w, n in zip(candidates, thrice, strict=True) if n == 3]
    if len(words) < MIN_WORDS:  # an unusual tokenizer: multi-token words, corrected by PromptMaker._fix
        words = candidates
    if not words:
        raise SyntheticError("the tokenizer's vocabulary has no alphabetic words to make prompts of")
    return words


class PromptMaker:
    """Makes prompts of requested token lengths; an optional shared prefix opens every prompt."""

    def __init__(self, tokenizer: Any, rng: random.Random, prefix_tokens: int = 0) -> None:
        self.tokenizer = tokenizer
        self.rng = rng
        self.words = vocabulary_words(tokenizer)
        self.prefix: list[str] = []
        if prefix_tokens:
            words = rng.choices(self.words, k=prefix_tokens)
            self.prefix = self._fix([], words, prefix_tokens, count_tokens(tokenizer, [" ".join(words)])[0])[0]
        self.prefix_count = count_tokens(tokenizer, [" ".join(self.prefix)])[0] if self.prefix else 0

    def _fix(self, head: list[str], body: list[str], target: int, got: int) -> tuple[list[str], int]:
        """`body` trimmed or extended until `head + body` is `target` tokens, where the tokenizer allows."""
        for _ in range(FIX_ROUNDS):
            if got == target:
                break
            if got > target:
                body = body[: max(len(body) - (got - target), 1)]
            else:
                body = body + self.rng.choices(self.words, k=target - got)
            got = count_tokens(self.tokenizer, [" ".join(head + body)])[0]
        return body, got

    def make(self, lengths: Sequence[int]) -> list[tuple[str, int]]:
        """One prompt per length: the shared prefix, then that many tokens (vLLM's random-prefix-len semantics);
        each with its length as the tokenizer counts it. Tokenized in one batch; only a prompt that came out
        another length is corrected."""
        bodies = [self.rng.choices(self.words, k=n) for n in lengths]
        texts = [" ".join(self.prefix + body) for body in bodies]
        out = []
        for n, body, text, got in zip(lengths, bodies, texts, count_tokens(self.tokenizer, texts), strict=True):
            target = self.prefix_count + n
            if got != target:
                body, got = self._fix(self.prefix, body, target, got)
                text = " ".join(self.prefix + body)
            out.append((text, got))
        return out

    def prefix_text(self) -> str:
        return " ".join(self.prefix)
