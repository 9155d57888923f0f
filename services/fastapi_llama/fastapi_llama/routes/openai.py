"""TGI's OpenAI-compatible routes: /v1/completions, /v1/chat/completions and /v1/models. The two generation routes
differ only in how the prompt is made and how a choice looks; parameters, usage and chunking are shared."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request

from fastapi_llama.engine.types import FinishEvent, FinishReason, TokenEvent
from fastapi_llama.errors import ValidationFailed
from fastapi_llama.routes.common import Events, RequestId, ServiceDep, collected_response, stream_response
from fastapi_llama.schemas import (
    JSON_OR_EVENTS_RESPONSES,
    ChatRequest,
    CompletionRequest,
    GenerateParameters,
    OpenAIRequest,
    StreamOptions,
)
from fastapi_llama.service import Inputs, OpenAIOptions, Prepared, Service, Slot
from fastapi_llama.sse import event

router = APIRouter()
OPENAI_FINISH = {FinishReason.LENGTH: "length", FinishReason.EOS_TOKEN: "stop", FinishReason.STOP_SEQUENCE: "stop"}
# A choice from (text, finish reason or None until the last chunk): one for a chunk, one for the whole answer.
ChoiceOf = Callable[[str, str | None], dict[str, Any]]


def _parameters(body: OpenAIRequest, add_special_tokens: bool = True) -> tuple[GenerateParameters, OpenAIOptions]:
    try:
        max_tokens = body.token_cap()
    except ValueError as exc:
        raise ValidationFailed(f"Input validation error: {exc}") from exc
    if refused := body.unsupported():
        raise ValidationFailed(f"Input validation error: not supported by fastapi-llama: {', '.join(refused)}")
    # OpenAI's temperature 0 means greedy; TGI's GenerateParameters require > 0.
    temperature = body.temperature if body.temperature not in (None, 0) else None
    top_k = body.top_k if body.top_k not in (None, -1, 0) else None
    params = GenerateParameters(
        max_new_tokens=max_tokens,
        temperature=temperature,
        do_sample=temperature is not None,
        top_k=top_k,
        top_p=body.top_p if body.top_p not in (None, 1.0) else None,
        seed=body.seed,
        stop=body.stop_list(),
        repetition_penalty=body.repetition_penalty,
    )
    return params, OpenAIOptions(body.ignore_eos, body.min_tokens, add_special_tokens)


def _envelope(service: Service, prefix: str, obj: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": service.settings.model_id,
        "system_fingerprint": f"fastapi-llama-{service.engine.name}",
    }


def _usage(prepared: Prepared, generated_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prepared.input_length,
        "completion_tokens": generated_tokens,
        "total_tokens": prepared.input_length + generated_tokens,
    }


async def _answer(
    service: Service,
    accepting: Awaitable[tuple[Slot, Prepared]],
    request: Request,
    envelope: dict[str, Any],
    stream: StreamOptions | None,
    chunk_choice: ChoiceOf,
    final_choice: ChoiceOf,
):
    """The whole answer, or its chunks when `stream` is set; `usage` either way."""
    if stream is not None:
        return await stream_response(
            service, accepting, lambda events, prepared: _chunks(events, prepared, envelope, stream, chunk_choice)
        )

    def result(prepared: Prepared, _: list[TokenEvent], done: FinishEvent) -> dict[str, Any]:
        choice = final_choice(done.generated_text, OPENAI_FINISH[done.reason])
        return {**envelope, "choices": [choice], "usage": _usage(prepared, done.generated_tokens)}

    return await collected_response(service, accepting, request, result)


async def _chunks(
    events: Events, prepared: Prepared, envelope: dict[str, Any], options: StreamOptions, choice: ChoiceOf
) -> AsyncIterator[bytes]:
    """OpenAI's chunks, one per token, then the usage if asked, then `[DONE]`."""
    sent_final = False
    generated = 0

    def choice_chunk(text: str, reason: str | None) -> bytes:
        chunk = {**envelope, "choices": [choice(text, reason)]}
        if options.include_usage and options.continuous_usage_stats:
            chunk["usage"] = _usage(prepared, generated)
        return event(chunk)

    async for ev in events:
        if isinstance(ev, TokenEvent):
            generated += 1
            reason = OPENAI_FINISH[ev.finish.reason] if ev.finish is not None else None
            sent_final = ev.finish is not None
            yield choice_chunk("" if ev.special else ev.text, reason)
            continue
        if not sent_final:
            yield choice_chunk("", OPENAI_FINISH[ev.reason])
        if options.include_usage:
            yield event({**envelope, "choices": [], "usage": _usage(prepared, ev.generated_tokens)})
    yield b"data: [DONE]\n\n"


def _stream_options(body: OpenAIRequest) -> StreamOptions | None:
    return (body.stream_options or StreamOptions()) if body.stream else None


@router.post(
    "/v1/completions",
    summary="Complete a prompt (OpenAI dialect)",
    responses=JSON_OR_EVENTS_RESPONSES,
)
async def completions(body: CompletionRequest, request: Request, service: ServiceDep, x_request_id: RequestId = None):
    def inputs() -> Inputs:
        try:
            prompt = body.prompt_text()
        except ValueError as exc:
            raise ValidationFailed(f"Input validation error: {exc}") from exc
        return Inputs(prompt, *_parameters(body))

    # Read in accept, which counts the request and any refusal, as for every generation route.
    accepting = service.accept(inputs, x_request_id)

    def choice(text: str, reason: str | None) -> dict[str, Any]:
        # TGI leaves finish_reason as "" until the last chunk.
        return {"index": 0, "text": text, "finish_reason": reason or "", "logprobs": None}

    envelope = _envelope(service, "cmpl", "text_completion")
    return await _answer(service, accepting, request, envelope, _stream_options(body), choice, choice)


@router.post(
    "/v1/chat/completions",
    summary="Answer a conversation through the model's chat template (OpenAI dialect)",
    responses=JSON_OR_EVENTS_RESPONSES,
)
async def chat_completions(body: ChatRequest, request: Request, service: ServiceDep, x_request_id: RequestId = None):
    def inputs() -> Inputs:
        params, options = _parameters(body, add_special_tokens=False)  # the template writes its own BOS
        return Inputs(service.chat_prompt(body.conversation()), params, options)

    # The template is rendered in accept's worker thread, with the tokenization: a 2 MB conversation is slow too.
    accepting = service.accept(inputs, x_request_id)

    def delta(text: str, reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}

    def message(text: str, reason: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": reason,
        }

    stream = _stream_options(body)
    envelope = _envelope(service, "chatcmpl", "chat.completion.chunk" if stream else "chat.completion")
    return await _answer(service, accepting, request, envelope, stream, delta, message)


@router.get("/v1/models", summary="The served model (OpenAI dialect)")
async def models(service: ServiceDep) -> dict[str, Any]:
    card = {
        "id": service.settings.model_id,
        "object": "model",
        "created": service.started_at,
        "owned_by": "fastapi-llama",
    }
    # TGI's schema answers with one ModelInfo; OpenAI clients expect a list. This body is both.
    return {**card, "object": "list", "data": [card]}
