"""Static batching (the article's first figure): gather requests for a moment, run one padded `generate`, and make
everyone who arrives meanwhile wait for the next batch."""

from __future__ import annotations

import time
from typing import Any

from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.worker import WorkerEngine


class StaticEngine(WorkerEngine):
    name = "static"

    def __init__(
        self, model: Any, tokenizer: Any, max_batch_size: int, batch_wait_ms: float, keep_finished: bool = False
    ) -> None:
        super().__init__(model, tokenizer, keep_finished)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self._held: list[RequestStream] = []  # taken from the queue but left for a later batch

    def waiting(self) -> int:
        return super().waiting() + len(self._held)

    def next_batch(self) -> list[RequestStream] | None:
        """Up to max_batch_size requests that can share a `generate` call, gathered within batch_wait_ms of the
        first; requests with other sampling parameters wait for a later batch."""
        pending = self._held
        self._held = []
        if not pending:
            first = self.take()
            if first is None:
                return None
            pending = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(pending) < self.max_batch_size and (timeout := deadline - time.monotonic()) > 0:
            item = self.take(timeout)
            if item is None:  # the wait ran out, or `stop` was called: this batch runs, and is the last if stopping
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
