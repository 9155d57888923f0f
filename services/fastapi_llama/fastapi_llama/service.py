"""Between HTTP and the engine: validation against the limits, admission, and the request metrics."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError

from fastapi_llama.engine.base import Engine
from fastapi_llama.engine.stream import RequestStream
from fastapi_llama.engine.types import FinishEvent, GenerationError, GenerationRequest, SamplingParams, TokenEvent
from fastapi_llama.errors import GenerationFailed, Overloaded, ValidationFailed
from fastapi_llama.metrics import ServerMetrics
from fastapi_llama.schemas import GenerateParameters
from fastapi_llama.settings import Settings


@dataclass(frozen=True)
class OpenAIOptions:
    """What the OpenAI routes add to TGI's parameters (vLLM's fields, sent by benchmark clients) and how their
    prompt is tokenized."""

    ignore_eos: bool = False
    min_new_tokens: int = 0
    add_special_tokens: bool = True  # False for a chat template's output, which holds its own BOS


@dataclass(frozen=True)
class Inputs:
    """What a route makes of its body: the prompt (the text, or a chat template's rendering) and the parameters."""

    prompt: str
    params: GenerateParameters
    options: OpenAIOptions = OpenAIOptions()


@dataclass
class Prepared:
    """A validated request, ready for the engine."""

    request: GenerationRequest
    inputs: str
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def input_length(self) -> int:
        return len(self.request.input_ids)


class Slot:
    """One in-flight slot, taken by `Service.admit`. A streaming answer takes it in the handler and holds it in
    the stream's body, so it is a value rather than a `with` block in one place; it is given back once."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._service.in_flight -= 1

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass
class Service:
    settings: Settings
    engine: Engine
    tokenizer: Any
    metrics: ServerMetrics
    in_flight: int = 0
    started_at: int = field(default_factory=lambda: int(time.time()))

    async def accept(self, inputs: Callable[[], Inputs], request_id: str | None = None) -> tuple[Slot, Prepared]:
        """Count the request, admit it, then validate it: its slot and the request ready for the engine. Admission
        comes first, as TGI takes its permit before validating, so a refusal (429) costs no tokenization.
        `inputs` (the route's reading of its body: OpenAI's fields, a chat template) is made and tokenized in a
        worker thread: a 2 MB prompt took 1.3 s with the tiny model's tokenizer, and the event loop must keep
        answering /health and the running streams meanwhile. Whatever refuses the request here, route or service,
        counts as one validation failure; a request that fails validation gives its slot back."""
        arrived = time.perf_counter()
        self.metrics.request_count.inc()
        slot = self.admit()
        try:
            prepared = await asyncio.to_thread(self._validate, inputs, request_id)
        except BaseException:  # a validation failure, or the handler cancelled while the thread tokenized
            slot.release()
            raise
        prepared.arrived = arrived
        return slot, prepared

    def _validate(self, inputs: Callable[[], Inputs], request_id: str | None) -> Prepared:
        try:
            made = inputs()
            return self._prepare(made.prompt, made.params, request_id, made.options)
        except ValidationFailed:
            self.metrics.request_failure.inc(err="validation")
            raise

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The conversation written by the model's chat template, ready for the assistant's answer. A conversation
        the template refuses (Llama-2's wants user and assistant turns to alternate) is a bad input."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValidationFailed("Input validation error: the served model has no chat template")
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:
            raise ValidationFailed(f"Input validation error: the chat template refused the messages: {exc}") from exc

    def _prepare(
        self, inputs: str, params: GenerateParameters, request_id: str | None, options: OpenAIOptions
    ) -> Prepared:
        if refused := params.unsupported():
            raise ValidationFailed(f"Input validation error: not supported by fastapi-llama: {', '.join(refused)}")
        s = self.settings
        # A chat prompt already holds the template's BOS.
        ids: list[int] = self.tokenizer(inputs, add_special_tokens=options.add_special_tokens).input_ids
        if params.truncate is not None and len(ids) > params.truncate:
            ids = ids[-params.truncate :]
        if len(ids) > s.max_input_tokens:
            raise ValidationFailed(
                f"Input validation error: `inputs` must have less than {s.max_input_tokens} tokens. Given: {len(ids)}"
            )
        max_new = params.max_new_tokens if params.max_new_tokens is not None else s.max_total_tokens - len(ids)
        if len(ids) + max_new > s.max_total_tokens:
            raise ValidationFailed(
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {s.max_total_tokens}. "
                f"Given: {len(ids)} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        if options.min_new_tokens > max_new:
            raise ValidationFailed(
                f"Input validation error: `min_tokens` must be <= the token cap. Given: {options.min_new_tokens} "
                f"`min_tokens` and {max_new} max tokens"
            )
        # TGI samples as soon as any warper is set, not only with do_sample.
        warped = any(
            v is not None and v != neutral
            for v, neutral in (
                (params.temperature, 1.0),
                (params.top_k, 0),
                (params.top_p, 1.0),
                (params.typical_p, 1.0),
            )
        )
        do_sample = params.do_sample or warped
        seed = params.seed
        if seed is None and do_sample and self.engine.supports_seed:  # TGI reports the seed it drew
            seed = random.randrange(1, 2**63)
        sampling = SamplingParams(
            max_new_tokens=max_new,
            do_sample=do_sample,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            typical_p=params.typical_p,
            repetition_penalty=params.repetition_penalty,
            seed=seed,
            stop=tuple(params.stop),
            ignore_eos=options.ignore_eos,
            min_new_tokens=options.min_new_tokens,
        )
        if refused := self.engine.unsupported(sampling):
            raise ValidationFailed(
                f"Input validation error: not supported with --batching {self.engine.name}: {', '.join(refused)}"
            )
        request = GenerationRequest(request_id or uuid.uuid4().hex, ids, sampling)
        return Prepared(request, inputs)

    def admit(self) -> Slot:
        """Take an in-flight slot or refuse, as TGI's semaphore does. Hold it with `with` around the request's
        work, which gives it back however the work ends."""
        if self.in_flight >= self.settings.max_concurrent_requests:
            self.metrics.request_failure.inc(err="overloaded")
            raise Overloaded("Model is overloaded")
        self.in_flight += 1
        return Slot(self)

    async def generate(self, prepared: Prepared) -> AsyncIterator[TokenEvent | FinishEvent]:
        """Run an admitted request; its events, then the metrics. Leaving early cancels it in the engine."""
        stream = RequestStream(prepared.request, self.tokenizer, asyncio.get_running_loop())
        self.engine.submit(stream)
        try:
            async for event in stream.events():
                if isinstance(event, FinishEvent):
                    self._record_success(prepared, event)
                yield event
        except GenerationError as exc:
            self.metrics.request_failure.inc(err="generation")
            raise GenerationFailed(str(exc)) from exc

    def _record_success(self, prepared: Prepared, done: FinishEvent) -> None:
        m = self.metrics
        m.request_success.inc()
        m.request_duration.observe(time.perf_counter() - prepared.arrived)
        m.request_queue_duration.observe(done.queue_s)
        m.request_inference_duration.observe(done.inference_s)
        if done.generated_tokens:
            m.request_mean_time_per_token_duration.observe(done.inference_s / done.generated_tokens)
        m.request_generated_tokens.observe(done.generated_tokens)
        m.request_input_length.observe(prepared.input_length)
        m.request_max_new_tokens.observe(prepared.request.params.max_new_tokens)
