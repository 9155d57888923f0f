"""The interface every batching mode implements; the HTTP layer reaches an engine only through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.types import EngineStats, ModelInfo, SamplingParams


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

    def describe(self) -> ModelInfo:
        """The model's dtype and device, so that nothing outside the engine reads the model itself."""
        return ModelInfo(dtype=str(self.model.dtype).removeprefix("torch."), device_type=self.model.device.type)

    def unsupported(self, params: SamplingParams) -> list[str]:
        """Parameters this engine cannot honour for this request (refused with a 422)."""
        return []

    def warmup(self) -> None:  # noqa: B027 - optional hook, most engines need none
        """Run once before serving, so the first client does not pay for lazy initialisation."""
