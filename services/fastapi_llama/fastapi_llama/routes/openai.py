"""TGI's OpenAI-compatible routes: /v1/completions and /v1/models."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from fastapi_llama.engine.types import FinishEvent, FinishReason, TokenEvent
from fastapi_llama.errors import ValidationFailed
from fastapi_llama.routes.common import Events, RequestId, ServiceDep, collected_response, stream_response
from fastapi_llama.schemas import JSON_OR_EVENTS_RESPONSES, CompletionRequest, GenerateParameters, StreamOptions
from fastapi_llama.service import Prepared, Service
from fastapi_llama.sse import event

router = APIRouter()
OPENAI_FINISH = {FinishReason.LENGTH: "length", FinishReason.EOS_TOKEN: "stop", FinishReason.STOP_SEQUENCE: "stop"}


def _parameters(body: CompletionRequest) -> GenerateParameters:
    try:
        body.prompt_text()
    except ValueError as exc:
        raise ValidationFailed(f"Input validation error: {exc}") from exc
    if refused := body.unsupported():
        raise ValidationFailed(f"Input validation error: not supported by fastapi-llama: {', '.join(refused)}")
    # OpenAI's temperature 0 means greedy; TGI's GenerateParameters require > 0.
    temperature = body.temperature if body.temperature not in (None, 0) else None
    return GenerateParameters(
        max_new_tokens=body.max_tokens,
        temperature=temperature,
        do_sample=temperature is not None,
        top_p=body.top_p if body.top_p not in (None, 1.0) else None,
        seed=body.seed,
        stop=body.stop or [],
        repetition_penalty=body.repetition_penalty,
    )


def _envelope(service: Service, completion_id: str, created: int) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": service.settings.model_id,
        "system_fingerprint": f"fastapi-llama-{service.engine.name}",
    }


def _usage(prepared: Prepared, generated_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prepared.input_length,
        "completion_tokens": generated_tokens,
        "total_tokens": prepared.input_length + generated_tokens,
    }


@router.post(
    "/v1/completions",
    summary="Complete a prompt (OpenAI dialect)",
    responses=JSON_OR_EVENTS_RESPONSES,
)
async def completions(body: CompletionRequest, request: Request, service: ServiceDep, x_request_id: RequestId = None):
    params = _parameters(body)
    prepared = service.prepare(body.prompt_text(), params, x_request_id)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    envelope = _envelope(service, completion_id, created)
    if body.stream:
        options = body.stream_options or StreamOptions()
        return stream_response(service, prepared, lambda events: _chunks(events, prepared, envelope, options))

    def result(_: list[TokenEvent], done: FinishEvent) -> dict[str, Any]:
        reason = OPENAI_FINISH[done.reason]
        choice = {"index": 0, "text": done.generated_text, "finish_reason": reason, "logprobs": None}
        return {**envelope, "choices": [choice], "usage": _usage(prepared, done.generated_tokens)}

    return await collected_response(service, prepared, request, result)


async def _chunks(
    events: Events, prepared: Prepared, envelope: dict[str, Any], options: StreamOptions
) -> AsyncIterator[bytes]:
    """OpenAI's completion chunks, one per token, then the usage if asked, then `[DONE]`."""
    sent_final = False
    generated = 0

    def choice_chunk(text: str, reason: str) -> bytes:
        chunk = {**envelope, "choices": [{"index": 0, "text": text, "finish_reason": reason}]}
        if options.include_usage and options.continuous_usage_stats:
            chunk["usage"] = _usage(prepared, generated)
        return event(chunk)

    async for ev in events:
        if isinstance(ev, TokenEvent):
            generated += 1
            # TGI leaves finish_reason as "" until the last chunk.
            reason = OPENAI_FINISH[ev.finish.reason] if ev.finish is not None else ""
            sent_final = ev.finish is not None
            yield choice_chunk("" if ev.special else ev.text, reason)
            continue
        if not sent_final:
            yield choice_chunk("", OPENAI_FINISH[ev.reason])
        if options.include_usage:
            yield event({**envelope, "choices": [], "usage": _usage(prepared, ev.generated_tokens)})
    yield b"data: [DONE]\n\n"


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
