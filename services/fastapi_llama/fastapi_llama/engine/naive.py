"""The article's baseline: one request at a time through `model.generate`, queued behind a single worker."""

from __future__ import annotations

from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.worker import WorkerEngine


class NaiveEngine(WorkerEngine):
    """Serves requests strictly one after another: what a developer writes first, and the article measured."""

    name = "naive"

    def next_batch(self) -> list[RequestStream] | None:
        stream = self.take()
        return None if stream is None else [stream]
