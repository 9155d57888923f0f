"""TGI's generation routes: /generate, /generate_stream and the compat route /."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from fastapi_llama.engine.types import FinishEvent, TokenEvent
from fastapi_llama.routes.common import Events, RequestId, ServiceDep, collected_response, stream_response
from fastapi_llama.schemas import (
    ERROR_RESPONSES,
    JSON_OR_EVENTS_RESPONSES,
    STREAM_RESPONSES,
    CompatGenerateRequest,
    GenerateRequest,
)
from fastapi_llama.service import Inputs, Prepared, Service
from fastapi_llama.sse import EventStreamResponse, event, stream_details, token_json

router = APIRouter()


def _full_text(prepared: Prepared, text: str, return_full_text: bool | None) -> str:
    return prepared.inputs + text if return_full_text else text


async def generate_once(
    service: Service, body: GenerateRequest, request: Request, request_id: str | None, as_array: bool = False
) -> Response:
    """One GenerateResponse, or (`as_array`, the compat route's shape in TGI's schema) a list holding it."""

    def result(
        prepared: Prepared, tokens: list[TokenEvent], done: FinishEvent
    ) -> dict[str, Any] | list[dict[str, Any]]:
        answer: dict[str, Any] = {
            "generated_text": _full_text(prepared, done.generated_text, body.parameters.return_full_text)
        }
        if body.parameters.details:
            answer["details"] = {
                "finish_reason": done.reason.value,
                "generated_tokens": done.generated_tokens,
                "seed": done.seed,
                "prefill": [],
                "tokens": [token_json(t) for t in tokens],
            }
        return [answer] if as_array else answer

    accepting = service.accept(lambda: Inputs(body.inputs, body.parameters), request_id)
    return await collected_response(service, accepting, request, result)


async def stream_events(service: Service, body: GenerateRequest, request_id: str | None) -> StreamingResponse:
    accepting = service.accept(lambda: Inputs(body.inputs, body.parameters), request_id)
    return await stream_response(service, accepting, lambda events, prepared: _token_events(events, prepared, body))


async def _token_events(events: Events, prepared: Prepared, body: GenerateRequest) -> AsyncIterator[bytes]:
    """One event per token, as TGI writes them; the last one also carries the text and the details."""
    sent_final = False
    async for ev in events:
        if isinstance(ev, TokenEvent):
            payload = {"index": ev.index, "token": token_json(ev), "generated_text": None, "details": None}
            if ev.finish is not None:
                payload.update(_final_fields(prepared, ev.finish, body))
                sent_final = True
            yield event(payload)
        elif not sent_final:  # the engine stopped after the last token was sent
            payload = {"index": ev.generated_tokens, "token": _EMPTY_TOKEN}
            yield event({**payload, **_final_fields(prepared, ev, body)})


_EMPTY_TOKEN = {"id": 0, "text": "", "logprob": None, "special": True}


def _final_fields(prepared: Prepared, done: FinishEvent, body: GenerateRequest) -> dict[str, Any]:
    """What TGI adds to the last token's event."""
    return {
        "generated_text": _full_text(prepared, done.generated_text, body.parameters.return_full_text),
        "details": stream_details(done, prepared.input_length) if body.parameters.details else None,
    }


@router.post("/generate", summary="Generate tokens", responses=ERROR_RESPONSES)
async def generate(body: GenerateRequest, request: Request, service: ServiceDep, x_request_id: RequestId = None):
    return await generate_once(service, body, request, x_request_id)


@router.post(
    "/generate_stream",
    summary="Generate a stream of tokens using Server-Sent Events",
    response_class=EventStreamResponse,
    responses=STREAM_RESPONSES,
)
async def generate_stream(body: GenerateRequest, service: ServiceDep, x_request_id: RequestId = None):
    return await stream_events(service, body, x_request_id)


@router.post(
    "/",
    summary="Generate tokens if `stream == false` or a stream of tokens if `stream == true`",
    responses=JSON_OR_EVENTS_RESPONSES,
)
async def compat_generate(
    body: CompatGenerateRequest, request: Request, service: ServiceDep, x_request_id: RequestId = None
):
    if body.stream:
        return await stream_events(service, body, x_request_id)
    # TGI answers an array here (its clients read `payload[0]`), unlike /generate.
    return await generate_once(service, body, request, x_request_id, as_array=True)
