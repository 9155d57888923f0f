"""Assembles the FastAPI app from a Service; nothing is created at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fastapi_llama import __version__
from fastapi_llama.errors import PayloadTooLarge, count_refused, install_error_handlers
from fastapi_llama.limits import PayloadLimit
from fastapi_llama.memory import MemoryProbe
from fastapi_llama.routes import debug, openai, ops, tgi
from fastapi_llama.service import Service


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.engine.stop()

    app = FastAPI(
        title="fastapi-llama",
        version=__version__,
        description="A FastAPI + transformers LLM server that speaks Text Generation Inference's HTTP API.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(
        PayloadLimit,
        limit=service.settings.payload_limit,
        on_reject=lambda path: count_refused(service.metrics, path, PayloadTooLarge),
    )
    install_error_handlers(app)
    for module in (tgi, openai, ops):
        app.include_router(module.router)
    if service.settings.debug_memory_routes:
        app.state.memory = MemoryProbe()
        app.include_router(debug.router)
    return app
