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
    if len(words) < MIN_WORDS:  # an unusual tokenizer: multi-token words, corrected by PromptMaker._fit
        words = candidates
    if not words:
        raise SyntheticError("the tokenizer's vocabulary has no alphabetic words to make prompts of")
    return words


class PromptMaker:
    """Makes prompts of a requested token length; an optional shared prefix opens every prompt."""

    def __init__(self, tokenizer: Any, rng: random.Random, prefix_tokens: int = 0) -> None:
        self.tokenizer = tokenizer
        self.rng = rng
        self.words = vocabulary_words(tokenizer)
        self.prefix = self._fit([], prefix_tokens) if prefix_tokens else []

    def _draw(self, n: int) -> list[str]:
        return [self.rng.choice(self.words) for _ in range(max(n, 0))]

    def _fit(self, head: list[str], n: int) -> list[str]:
        """`head` followed by words, the whole `len(head words) + n` tokens long where the tokenizer allows."""
        target = count_tokens(self.tokenizer, [" ".join(head)])[0] + n if head else n
        body = self._draw(n)
        for _ in range(FIX_ROUNDS):
            got = count_tokens(self.tokenizer, [" ".join(head + body)])[0]
            if got == target:
                break
            if got > target:
                body = body[: max(len(body) - (got - target), 1 if n else 0)]
            else:
                body += self._draw(target - got)
        return body if not head else head + body

    def make(self, input_tokens: int) -> str:
        """A prompt of the shared prefix, then `input_tokens` more tokens (vLLM's random-prefix-len semantics)."""
        return " ".join(self._fit(list(self.prefix), input_tokens))

    def prefix_text(self) -> str:
        return " ".join(self.prefix)
