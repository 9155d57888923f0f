"""What the route modules share: the service dependency, request ids, error streams, collecting a whole answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import StreamingResponse

from fastapi_llama.engine.types import FinishEvent, TokenEvent
from fastapi_llama.errors import ServiceError
from fastapi_llama.service import Prepared, Service
from fastapi_llama.sse import SSE_HEADERS, event


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
RequestId = Annotated[str | None, Header(alias="x-request-id")]


class ClientDisconnected(Exception):
    pass


def error_stream(exc: ServiceError) -> StreamingResponse:
    """A 200 stream holding one error event: how TGI reports overload on its streaming routes."""

    async def one() -> AsyncIterator[bytes]:
        yield event(exc.body())

    return StreamingResponse(one(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(service: Service, prepared: Prepared, request: Request) -> tuple[list[TokenEvent], FinishEvent]:
    """Run an admitted request to the end for a non-streaming answer. A client that leaves meanwhile, even while
    the request is still queued, cancels it: nobody would read the answer."""

    async def run() -> tuple[list[TokenEvent], FinishEvent]:
        tokens: list[TokenEvent] = []
        async for ev in service.generate(prepared):
            if isinstance(ev, TokenEvent):
                tokens.append(ev)
            else:
                return tokens, ev
        raise RuntimeError("the engine ended a request without finishing it")

    work = asyncio.ensure_future(run())
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        service.release()
    if not work.done():
        work.cancel()  # unwinds the event stream, which cancels the request in the engine
        raise ClientDisconnected
    watcher.cancel()
    return work.result()
