"""Engines that own one worker thread calling `model.generate` (naive, static): the queue, the thread, the
generation call with its error handling, and the gauges read from what the thread is running."""

from __future__ import annotations

import queue
import threading
from abc import abstractmethod
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from fastapi_llama.engine.base import Engine
from fastapi_llama.engine.hooks import EosGuard, LogprobRecorder, StreamsDone, StreamsStreamer
from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.types import EngineStats, GenerationError


def pad_token_id(tokenizer: Any) -> int:
    """The id `generate` pads rows with: the tokenizer's pad token, else its EOS (Llama-2 ships without a pad)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def generate_for(model: Any, streams: list[RequestStream], pad: int, keep: list | None = None) -> None:
    """One `generate` call for requests that share sampling parameters (one row each, left-padded). EOS ends a row
    through its stream (StreamsDone), not `generate`'s own check: whether it does (ignore_eos, min_tokens) is per
    request. `keep` (--debug-leak-requests) receives each row's tokens and KV cache."""
    params = streams[0].request.params
    lengths = [len(s.request.input_ids) for s in streams]
    width = max(lengths)
    ids = torch.full((len(streams), width), pad, dtype=torch.long)
    mask = torch.zeros((len(streams), width), dtype=torch.long)
    for row, stream in enumerate(streams):
        n = lengths[row]
        ids[row, width - n :] = torch.tensor(stream.request.input_ids)
        mask[row, width - n :] = 1
    recorder = LogprobRecorder()
    if params.seed is not None:
        torch.manual_seed(params.seed)
    for stream in streams:
        stream.mark_started()
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=max(s.request.params.max_new_tokens for s in streams),
        streamer=StreamsStreamer(streams, recorder),
        stopping_criteria=StoppingCriteriaList([StreamsDone(streams)]),
        logits_processor=LogitsProcessorList([EosGuard(streams), recorder]),
        pad_token_id=pad,
        eos_token_id=None,
        return_dict_in_generate=keep is not None,
        **params.generate_kwargs(),
    )
    if keep is not None:
        keep.extend(row_tensors(out, len(streams)))


def row_tensors(out: Any, rows: int) -> list[tuple[torch.Tensor, ...]]:
    """Each row's own copy of its tokens and KV cache (a view would keep the whole batch's tensors instead)."""
    layers = out.cache.layers
    return [
        (out.sequences[row].clone(), *(t[row].clone() for layer in layers for t in (layer.keys, layer.values)))
        for row in range(rows)
    ]


class WorkerEngine(Engine):
    """The worker thread and its queue. A subclass decides only what runs together: it implements `next_batch`,
    taking submitted requests with `take`, and may extend `waiting` with requests it holds back."""

    def __init__(self, model: Any, tokenizer: Any, keep_finished: bool = False) -> None:
        super().__init__(model, tokenizer)
        # --debug-leak-requests: every finished request's tensors, kept for the life of the engine on purpose.
        self.kept: list[tuple[torch.Tensor, ...]] | None = [] if keep_finished else None
        self._queue: queue.Queue[RequestStream | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-engine", daemon=True)
        self._batch: list[RequestStream] = []
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    def healthy(self) -> bool:
        return self._thread.is_alive()

    def submit(self, stream: RequestStream) -> None:
        self._queue.put(stream)

    def waiting(self) -> int:
        """Requests submitted but not yet running (the queue gauge)."""
        return self._queue.qsize()

    def take(self, timeout: float | None = None) -> RequestStream | None:
        """The next submitted request, for `next_batch`: waits up to `timeout` seconds, or until one comes if None.
        None when the wait runs out or the engine is stopping; the worker loop ends once `next_batch` returns
        after `stop`, so a subclass needs no stop flag of its own."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def snapshot(self) -> EngineStats:
        batch = [s for s in self._batch if not s.done]
        max_tokens = sum(len(s.request.input_ids) + s.request.params.max_new_tokens for s in batch)
        return EngineStats(self.waiting(), len(batch), max_tokens)

    @abstractmethod
    def next_batch(self) -> list[RequestStream] | None:
        """The requests to generate together next ([] to look again; None to stop)."""

    def _loop(self) -> None:
        pad = pad_token_id(self.tokenizer)
        with torch.inference_mode():
            while not self._stopping and (batch := self.next_batch()) is not None:
                self._generate(batch, pad)
                del batch  # not held while the thread waits for the next one: an idle engine keeps no stream

    def _generate(self, batch: list[RequestStream], pad: int) -> None:
        batch = [s for s in batch if not s.cancelled]  # their clients left while they waited
        if not batch:
            return
        self._batch = batch
        try:
            generate_for(self.model, batch, pad, self.kept)
        except Exception as exc:  # noqa: BLE001 - reported to each client as TGI's 424
            for stream in batch:
                stream.fail(GenerationError(f"generation failed: {exc}"))
        finally:
            self._batch = []
        for stream in batch:
            stream.finish_if_open()
