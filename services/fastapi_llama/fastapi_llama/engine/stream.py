"""RequestStream: one request's bridge from an engine's thread to the asyncio handler that serves it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi_llama.detokenize import IncrementalDetokenizer
from fastapi_llama.engine.types import FinishEvent, FinishReason, GenerationRequest, TokenEvent


class RequestStream:
    """One request's path from the engine's thread to the asyncio handler.

    The engine calls `push` for every generated token; it detokenizes, checks stop sequences and the length cap,
    and tells the engine when the request is done. The handler reads `events()`; leaving it early (a client that
    disconnects) cancels the request, and the engine stops spending the model on it.
    """

    def __init__(self, request: GenerationRequest, tokenizer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self._tokenizer = tokenizer
        self._loop = loop
        self._queue: asyncio.Queue[TokenEvent | FinishEvent | BaseException] = asyncio.Queue()
        self._detok = IncrementalDetokenizer(tokenizer)
        self._special_ids = set(getattr(tokenizer, "all_special_ids", []))
        self._eos_ids = _eos_ids(tokenizer)
        self._cancelled = threading.Event()
        self._on_cancel: list[Callable[[], None]] = []
        self.finished = False
        self.generated = 0
        self.enqueued_at = time.perf_counter()
        self.started_at: float | None = None

    @property
    def eos_ids(self) -> set[int]:
        return self._eos_ids

    def eos_allowed(self) -> bool:
        """May the next token be EOS? Not before `min_new_tokens` tokens."""
        return self.generated >= self.request.params.min_new_tokens

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self.finished or self.cancelled

    def cancel(self) -> None:
        if self.finished or self._cancelled.is_set():
            self._cancelled.set()
            return
        self._cancelled.set()
        for callback in self._on_cancel:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Called once if the request is abandoned before it finishes (its client left)."""
        self._on_cancel.append(callback)

    def mark_started(self) -> None:
        if self.started_at is None:
            self.started_at = time.perf_counter()

    def push(self, token_id: int, logprob: float | None = None) -> bool:
        """Record one generated token (engine thread). Returns True once the request needs no more tokens."""
        if self.done:
            return True
        self.mark_started()
        params = self.request.params
        special = token_id in self._special_ids
        text = self._detok.add(token_id, special)
        self.generated += 1
        reason: FinishReason | None = None
        if token_id in self._eos_ids and not params.ignore_eos and self.generated > params.min_new_tokens:
            reason = FinishReason.EOS_TOKEN
        elif params.stop and self._detok.tail_contains(params.stop, len(text)):
            reason = FinishReason.STOP_SEQUENCE
        elif self.generated >= params.max_new_tokens:
            reason = FinishReason.LENGTH
        finish = self._finish_event(reason) if reason is not None else None
        self._emit(TokenEvent(self.generated - 1, token_id, text, logprob, special, finish))
        return self.done

    def finish_if_open(self) -> None:
        """Close a request that the engine stopped without a reason of its own (its length cap was reached)."""
        if not self.done:
            self._emit(self._finish_event(FinishReason.LENGTH))

    def fail(self, error: BaseException) -> None:
        if not self.finished:
            self.finished = True
            self._emit(error)

    def _finish_event(self, reason: FinishReason) -> FinishEvent:
        self.finished = True
        now = time.perf_counter()
        started = self.started_at or now
        return FinishEvent(
            reason=reason,
            generated_tokens=self.generated,
            generated_text=self._detok.text,
            seed=self.request.params.seed,
            queue_s=started - self.enqueued_at,
            inference_s=now - started,
        )

    def _emit(self, item: TokenEvent | FinishEvent | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop closed: the server is shutting down
            self.cancel()

    async def events(self) -> AsyncIterator[TokenEvent | FinishEvent]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, TokenEvent) and item.finish is not None:
                    item = item.finish
                    yield item
                if isinstance(item, FinishEvent):
                    return
        finally:
            self.cancel()


def _eos_ids(tokenizer: Any) -> set[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list | tuple) else {eos}
