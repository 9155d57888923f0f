"""What the route modules share: the service dependency, request ids, and the two ways a generation route answers
(a whole JSON body, or a stream of server-sent events), each holding the in-flight slot `Service.accept` took."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fastapi_llama.engine.types import FinishEvent, TokenEvent
from fastapi_llama.errors import Overloaded, ServiceError
from fastapi_llama.service import Prepared, Service, Slot
from fastapi_llama.sse import SSE_HEADERS, event


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
RequestId = Annotated[str | None, Header(alias="x-request-id")]
Events = AsyncIterator[TokenEvent | FinishEvent]
Chunks = AsyncIterator[bytes]


class ClientDisconnected(Exception):
    pass


async def collected_response(
    service: Service,
    accepting: Awaitable[tuple[Slot, Prepared]],
    request: Request,
    render: Callable[[Prepared, list[TokenEvent], FinishEvent], Any],
) -> Response:
    """Await the request's admission and validation (a refusal raises `Overloaded`, 429), run it to the end and
    answer `render(prepared, tokens, finish)` as JSON with its request id. A client that leaves first gets 499,
    nginx's code for nobody listening."""
    slot, prepared = await accepting
    try:
        tokens, done = await collect(service, slot, prepared, request)
    except ClientDisconnected:
        return Response(status_code=499)
    return JSONResponse(render(prepared, tokens, done), headers={"x-request-id": prepared.request.request_id})


async def stream_response(
    service: Service, accepting: Awaitable[tuple[Slot, Prepared]], render: Callable[[Events, Prepared], Chunks]
) -> StreamingResponse:
    """Await the request's admission and validation, then answer with its events as server-sent events, each
    written by `render`. TGI validates before the stream starts (422) but reports overload and generation failures
    as an error event inside a 200 stream; we do the same, so clients written for TGI see the same thing."""
    try:
        slot, prepared = await accepting
    except Overloaded as exc:
        return error_stream(exc)

    async def body() -> Chunks:
        with slot:
            try:
                async with aclosing(render(service.generate(prepared), prepared)) as chunks:
                    async for chunk in chunks:
                        yield chunk
            except ServiceError as exc:
                yield event(exc.body())

    headers = {**SSE_HEADERS, "x-request-id": prepared.request.request_id}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def error_stream(exc: ServiceError) -> StreamingResponse:
    """A 200 stream holding one error event: how TGI reports overload on its streaming routes."""

    async def one() -> AsyncIterator[bytes]:
        yield event(exc.body())

    return StreamingResponse(one(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(
    service: Service, slot: Slot, prepared: Prepared, request: Request
) -> tuple[list[TokenEvent], FinishEvent]:
    """Run an accepted request to the end, holding its slot, for a non-streaming answer. A client that leaves
    meanwhile, even while the request is still queued, cancels it: nobody would read the answer."""

    async def run() -> tuple[list[TokenEvent], FinishEvent]:
        tokens: list[TokenEvent] = []
        async for ev in service.generate(prepared):
            if isinstance(ev, TokenEvent):
                tokens.append(ev)
            else:
                return tokens, ev
        raise RuntimeError("the engine ended a request without finishing it")

    with slot:
        work = asyncio.ensure_future(run())
        watcher = asyncio.ensure_future(_wait_for_disconnect(request))
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        work.cancel()  # unwinds the event stream, which cancels the request in the engine
        raise ClientDisconnected
    watcher.cancel()
    return work.result()
