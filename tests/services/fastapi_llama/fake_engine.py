"""An engine without a model, for testing the HTTP layer in process."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

from fastapi_llama.engine.base import Engine
from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.types import EngineStats, GenerationError, ModelInfo, SamplingParams


class FakeEngine(Engine):
    """Answers every request with the scripted token ids (cycled up to its max_new_tokens), pushed from a worker
    thread one request at a time, as the naive engine pushes them.

    A test steers it: `fail_after` fails a request with GenerationError after that many tokens; clearing `gate`
    holds the running request after `hold_after` tokens (so requests pile up in the queue and in admission) until
    the gate is set or the request is cancelled; `alive = False` makes it unhealthy.
    """

    name = "fake"

    def __init__(self, tokenizer: Any, script: Sequence[int]) -> None:
        super().__init__(model=None, tokenizer=tokenizer)
        self.script = list(script)
        self.fail_after: int | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.hold_after = 0
        self.alive = True
        self.submitted: list[RequestStream] = []
        self.cancelled: list[str] = []  # request ids whose on_cancel callback ran
        self._queue: queue.Queue[RequestStream | None] = queue.Queue()
        self._running: RequestStream | None = None
        self._thread = threading.Thread(target=self._work, name="fake-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self.gate.set()
        self._thread.join(timeout=5)

    def healthy(self) -> bool:
        return self.alive and self._thread.is_alive()

    def submit(self, stream: RequestStream) -> None:
        self.submitted.append(stream)
        stream.on_cancel(lambda: self.cancelled.append(stream.request.request_id))
        self._queue.put(stream)

    def snapshot(self) -> EngineStats:
        running = self._running
        if running is None or running.done:
            return EngineStats(self._queue.qsize(), 0, 0)
        tokens = len(running.request.input_ids) + running.request.params.max_new_tokens
        return EngineStats(self._queue.qsize(), 1, tokens)

    def describe(self) -> ModelInfo:
        return ModelInfo(dtype="float16", device_type="fake")

    def unsupported(self, params: SamplingParams) -> list[str]:
        return ["typical_p"] if params.typical_p not in (None, 1.0) else []

    def _work(self) -> None:
        while (stream := self._queue.get()) is not None:
            self._running = stream
            try:
                self._generate(stream)
            finally:
                self._running = None

    def _generate(self, stream: RequestStream) -> None:
        for i in range(stream.request.params.max_new_tokens):
            if i == self.hold_after:
                while not self.gate.wait(0.005):
                    if stream.cancelled:
                        return
            if stream.done:
                return
            if self.fail_after is not None and i == self.fail_after:
                stream.fail(GenerationError("fake engine failed"))
                return
            if stream.push(self.script[i % len(self.script)], logprob=-0.5):
                return
        stream.finish_if_open()
