"""Errors in TGI's shape, `{"error": ..., "error_type": ...}`, with TGI's status codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastapi_llama.metrics import ServerMetrics


class ServiceError(Exception):
    status_code = 500
    error_type = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code)


class ValidationFailed(ServiceError):
    status_code = 422
    error_type = "validation"


class Overloaded(ServiceError):
    status_code = 429
    error_type = "overloaded"


class GenerationFailed(ServiceError):
    status_code = 424
    error_type = "generation"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "Input validation error: " + "; ".join(parts)


GENERATION_ROUTES = frozenset({"/", "/generate", "/generate_stream", "/v1/completions", "/v1/chat/completions"})


def count_refused(metrics: ServerMetrics | None, path: str, error: type[ServiceError]) -> None:
    """A generation request refused before it reaches the service (its body too large, not JSON, off the schema)
    is still a request, and a failure by its error type, for TGI's counters; the service counts the others."""
    if metrics is not None and path in GENERATION_ROUTES:
        metrics.request_count.inc()
        metrics.request_failure.inc(err=error.error_type)


def _count_rejected(request: Request) -> None:
    service = getattr(request.app.state, "service", None)
    count_refused(service.metrics if service is not None else None, request.url.path, ValidationFailed)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count_rejected(request)
        return ValidationFailed(_describe(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. invalid UTF-8): a bad input
            _count_rejected(request)
            return ValidationFailed(f"Input validation error: {exc.detail}").response()
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        # exc.headers carries Allow on a 405 (RFC 9110).
        return JSONResponse(
            {"error": str(exc.detail), "error_type": error_type}, status_code=exc.status_code, headers=exc.headers
        )
