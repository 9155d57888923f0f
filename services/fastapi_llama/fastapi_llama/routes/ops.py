"""Operational routes: /health, /info, /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from fastapi_llama import __version__
from fastapi_llama.routes.common import ServiceDep
from fastapi_llama.schemas import ErrorResponse

router = APIRouter()


@router.get(
    "/health",
    summary="Health check: 200 once the model is loaded and its engine is running",
    response_class=Response,
    responses={
        200: {"description": "Everything is working fine", "content": None},
        503: {"description": "The engine is down", "model": ErrorResponse},
    },
)
async def health(service: ServiceDep) -> Response:
    if not service.engine.healthy():  # TGI's body for a failed health check
        return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503)
    return Response(status_code=200)


@router.get("/info", summary="Model and server limits, in TGI's Info schema")
async def info(service: ServiceDep) -> dict[str, Any]:
    s = service.settings
    model = service.engine.describe()
    return {
        "model_id": s.model_id,
        "model_sha": s.revision,
        "model_pipeline_tag": "text-generation",
        "model_dtype": model.dtype,
        "model_device_type": model.device_type,
        "max_concurrent_requests": s.max_concurrent_requests,
        "max_best_of": 1,
        "max_stop_sequences": 4,
        "max_input_tokens": s.max_input_tokens,
        "max_total_tokens": s.max_total_tokens,
        "validation_workers": 1,
        "max_client_batch_size": 1,
        "router": "fastapi-llama",
        "version": __version__,
        "sha": None,
        "docker_label": None,
        "batching": service.engine.name,
    }


@router.get("/metrics", summary="Prometheus metrics, TGI's names", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> PlainTextResponse:
    stats = service.engine.snapshot()
    service.metrics.observe_engine(stats.queued, stats.running, stats.running_max_tokens)
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")
