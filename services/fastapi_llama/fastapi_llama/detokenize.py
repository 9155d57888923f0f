"""Incremental detokenization: token ids in, text deltas out, never a broken character."""

from __future__ import annotations

from typing import Any

MAX_PENDING_TOKENS = 4


class IncrementalDetokenizer:
    """Decodes a growing list of ids. A byte-level token can end in the middle of a UTF-8 character; its text is
    held back until the character completes (the same prefix/read offsets that TGI and vLLM use)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""

    def add(self, token_id: int, special: bool = False) -> str:
        """Append one token; returns the text it completes (possibly empty). Special tokens return their own
        spelling but stay out of `text`, as TGI's `generated_text` skips them."""
        if special:
            return self._tokenizer.convert_ids_to_tokens(token_id)
        self._ids.append(token_id)
        decode = self._tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset])
        full = decode(self._ids[self._prefix_offset :])
        pending = len(self._ids) - self._read_offset
        # A UTF-8 character spans at most 4 bytes: past that, the bytes are invalid and will never complete
        # (a random model produces such runs). Emit them as U+FFFD instead of re-decoding a growing tail forever.
        if len(full) > len(prefix) and (not full.endswith("\ufffd") or pending >= MAX_PENDING_TOKENS):
            delta = full[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            self.text += delta
            return delta
        return ""

    def tail_contains(self, stops: tuple[str, ...], delta_len: int) -> bool:
        """True if a stop sequence ends inside the text added last."""
        for stop in stops:
            window = self.text[-(delta_len + len(stop) - 1) :] if delta_len else ""
            if stop and stop in window:
                return True
        return False
