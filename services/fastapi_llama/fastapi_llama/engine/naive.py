"""The article's baseline: one request at a time through `model.generate`, queued behind a single worker."""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from fastapi_llama.engine.base import Engine, EngineStats, GenerationError, RequestStream, pad_token_id
from fastapi_llama.engine.hooks import LogprobRecorder, StreamsDone, StreamsStreamer


def generate_for(model: Any, streams: list[RequestStream], pad_token_id: int) -> None:
    """One `generate` call for requests that share sampling parameters (one row each, left-padded)."""
    params = streams[0].request.params
    lengths = [len(s.request.input_ids) for s in streams]
    width = max(lengths)
    ids = torch.full((len(streams), width), pad_token_id, dtype=torch.long)
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
    model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=max(s.request.params.max_new_tokens for s in streams),
        streamer=StreamsStreamer(streams, recorder),
        stopping_criteria=StoppingCriteriaList([StreamsDone(streams)]),
        logits_processor=LogitsProcessorList([recorder]),
        pad_token_id=pad_token_id,
        **params.generate_kwargs(),
    )


class NaiveEngine(Engine):
    """Serves requests strictly one after another: what a developer writes first, and the article measured."""

    name = "naive"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self._queue: queue.Queue[RequestStream | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="naive-engine", daemon=True)
        self._running: RequestStream | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def healthy(self) -> bool:
        return self._thread.is_alive()

    def submit(self, stream: RequestStream) -> None:
        self._queue.put(stream)

    def snapshot(self) -> EngineStats:
        running = self._running
        if running is None:
            return EngineStats(queued=self._queue.qsize())
        req = running.request
        return EngineStats(self._queue.qsize(), 1, len(req.input_ids) + req.params.max_new_tokens)

    def _run(self) -> None:
        pad = pad_token_id(self.tokenizer)
        with torch.inference_mode():
            while (stream := self._queue.get()) is not None:
                if stream.cancelled:  # its client left while it waited
                    continue
                self._running = stream
                try:
                    generate_for(self.model, [stream], pad)
                except Exception as exc:  # noqa: BLE001 - reported to the client as TGI's 424
                    stream.fail(GenerationError(f"generation failed: {exc}"))
                finally:
                    self._running = None
                stream.finish_if_open()
