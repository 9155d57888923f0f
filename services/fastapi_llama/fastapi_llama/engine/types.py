"""What flows between the HTTP layer and an engine: a request and its sampling parameters, the events it produces,
the engine's gauges, and the one error an engine reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
    # vLLM's extensions that benchmark clients send to fix the output length: EOS does not end the request, or
    # not before `min_new_tokens` tokens (the engine keeps EOS from being chosen until then).
    ignore_eos: bool = False
    min_new_tokens: int = 0

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


@dataclass(frozen=True)
class ModelInfo:
    """What /info tells about the model an engine runs, in TGI's terms."""

    dtype: str  # "float32", "bfloat16", ...
    device_type: str  # "cpu", "cuda"


@dataclass(frozen=True)
class EngineStats:
    """The engine's state at one moment: what the queue and batch gauges show."""

    queued: int = 0
    running: int = 0
    running_max_tokens: int = 0
