"""TGI's generation routes: /generate, /generate_stream and the compat route /."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fastapi_llama.engine.types import FinishEvent, TokenEvent
from fastapi_llama.errors import ServiceError
from fastapi_llama.routes.common import ClientDisconnected, RequestId, ServiceDep, collect, error_stream
from fastapi_llama.schemas import (
    ERROR_RESPONSES,
    JSON_OR_EVENTS_RESPONSES,
    STREAM_RESPONSES,
    CompatGenerateRequest,
    GenerateRequest,
)
from fastapi_llama.service import Prepared, Service
from fastapi_llama.sse import SSE_HEADERS, EventStreamResponse, event, stream_details, token_json

router = APIRouter()


def _full_text(prepared: Prepared, text: str, return_full_text: bool | None) -> str:
    return prepared.inputs + text if return_full_text else text


async def generate_once(service: Service, body: GenerateRequest, request: Request, request_id: str | None) -> Response:
    prepared = service.prepare(body.inputs, body.parameters, request_id)
    service.admit()
    try:
        tokens, done = await collect(service, prepared, request)
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; nginx's code for it
    result: dict[str, Any] = {
        "generated_text": _full_text(prepared, done.generated_text, body.parameters.return_full_text)
    }
    if body.parameters.details:
        result["details"] = {
            "finish_reason": done.reason.value,
            "generated_tokens": done.generated_tokens,
            "seed": done.seed,
            "prefill": [],
            "tokens": [token_json(t) for t in tokens],
        }
    return JSONResponse(result, headers={"x-request-id": prepared.request.request_id})


async def stream_events(service: Service, body: GenerateRequest, request_id: str | None) -> StreamingResponse:
    """TGI validates before the stream starts but reports overload and generation failures as an error event
    inside a 200 stream; we do the same, so clients written for TGI see the same thing."""
    prepared = service.prepare(body.inputs, body.parameters, request_id)
    try:
        service.admit()
    except ServiceError as exc:
        return error_stream(exc)

    async def body_iter() -> AsyncIterator[bytes]:
        sent_final = False
        try:
            async for ev in service.generate(prepared):
                if isinstance(ev, TokenEvent):
                    payload = {"index": ev.index, "token": token_json(ev), "generated_text": None, "details": None}
                    if ev.finish is not None:
                        payload.update(_final_fields(prepared, ev.finish, body))
                        sent_final = True
                    yield event(payload)
                elif not sent_final:  # the engine stopped after the last token was sent
                    payload = {"index": ev.generated_tokens, "token": _EMPTY_TOKEN}
                    yield event({**payload, **_final_fields(prepared, ev, body)})
        except ServiceError as exc:
            yield event(exc.body())
        finally:
            service.release()

    return StreamingResponse(
        body_iter(),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "x-request-id": prepared.request.request_id},
    )


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
    return await generate_once(service, body, request, x_request_id)
