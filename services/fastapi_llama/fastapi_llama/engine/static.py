"""Static batching (the article's first figure): gather requests for a moment, run one padded `generate`, and make
everyone who arrives meanwhile wait for the next batch."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import torch

from fastapi_llama.engine.base import Engine, EngineStats, GenerationError, RequestStream, pad_token_id
from fastapi_llama.engine.naive import generate_for


class StaticEngine(Engine):
    name = "static"

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int, batch_wait_ms: float) -> None:
        super().__init__(model, tokenizer)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self._queue: queue.Queue[RequestStream | None] = queue.Queue()
        self._held: list[RequestStream] = []  # taken from the queue but left for a later batch
        self._batch: list[RequestStream] = []
        self._thread = threading.Thread(target=self._run, name="static-engine", daemon=True)
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

    def snapshot(self) -> EngineStats:
        batch = [s for s in self._batch if not s.done]
        max_tokens = sum(len(s.request.input_ids) + s.request.params.max_new_tokens for s in batch)
        return EngineStats(self._queue.qsize() + len(self._held), len(batch), max_tokens)

    def _collect(self) -> list[RequestStream] | None:
        """Up to max_batch_size requests that can share a `generate` call, gathered within batch_wait_ms of the
        first; requests with other sampling parameters wait for a later batch."""
        pending = self._held
        self._held = []
        if not pending:
            first = self._queue.get()
            if first is None:
                return None
            pending = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(pending) < self.max_batch_size and (timeout := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if item is None:
                self._stopping = True
                break
            pending.append(item)
        pending = [p for p in pending if not p.cancelled]
        if not pending:
            return []
        key = pending[0].request.params.batch_key()
        batch = [p for p in pending if p.request.params.batch_key() == key][: self.max_batch_size]
        chosen = {id(p) for p in batch}
        self._held = [p for p in pending if id(p) not in chosen]
        return batch

    def _run(self) -> None:
        pad = pad_token_id(self.tokenizer)
        with torch.inference_mode():
            while not self._stopping:
                batch = self._collect()
                if batch is None:
                    return
                if not batch:
                    continue
                self._batch = batch
                try:
                    generate_for(self.model, batch, pad)
                except Exception as exc:  # noqa: BLE001 - reported to each client as TGI's 424
                    for stream in batch:
                        stream.fail(GenerationError(f"generation failed: {exc}"))
                finally:
                    self._batch = []
                for stream in batch:
                    stream.finish_if_open()
