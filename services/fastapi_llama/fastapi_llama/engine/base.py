"""What flows between the HTTP layer and an engine, and the interface every batching mode implements."""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi_llama.detokenize import IncrementalDetokenizer


class FinishReason(StrEnum):
    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate`; unset warpers are left at their neutral values."""
        kwargs: dict[str, Any] = {"do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(
                temperature=self.temperature or 1.0,
                top_k=self.top_k or 0,
                top_p=self.top_p or 1.0,
                typical_p=self.typical_p or 1.0,
            )
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one `generate` call (everything but the length cap and stops)."""
        return (
            self.do_sample,
            self.temperature,
            self.top_k,
            self.top_p,
            self.typical_p,
            self.repetition_penalty,
            self.seed,
        )


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    input_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class FinishEvent:
    reason: FinishReason
    generated_tokens: int
    generated_text: str
    seed: int | None
    queue_s: float
    inference_s: float


@dataclass(frozen=True)
class TokenEvent:
    index: int
    id: int
    text: str
    logprob: float | None
    special: bool
    # Set on a request's last token: TGI sends the final token and generated_text in one event, so the handler
    # must know a token is the last without waiting for the next step.
    finish: FinishEvent | None = None


class GenerationError(RuntimeError):
    """Generation failed inside the engine (TGI answers 424)."""


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
        if token_id in self._eos_ids:
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


@dataclass(frozen=True)
class EngineStats:
    """The engine's state at one moment: what the queue and batch gauges show."""

    queued: int = 0
    running: int = 0
    running_max_tokens: int = 0


class Engine(ABC):
    """A batching mode. It owns the model once started; the HTTP layer only submits streams."""

    name: str = "engine"
    supports_seed: bool = True  # can a sampled request be replayed from its seed?

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def submit(self, stream: RequestStream) -> None:
        """Queue a request; never blocks the event loop."""

    @abstractmethod
    def healthy(self) -> bool: ...

    @abstractmethod
    def snapshot(self) -> EngineStats:
        """Read at every scrape, so the gauges show the real queue and batch, not the last change."""

    def unsupported(self, params: SamplingParams) -> list[str]:
        """Parameters this engine cannot honour for this request (refused with a 422)."""
        return []

    def warmup(self) -> None:  # noqa: B027 - optional hook, most engines need none
        """Run once before serving, so the first client does not pay for lazy initialisation."""


def pad_token_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
