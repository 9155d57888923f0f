"""Server-sent events as TGI writes them: one `data:` line of JSON per event."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import StreamingResponse

from fastapi_llama.engine.types import FinishEvent, TokenEvent

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(StreamingResponse):
    """What a streaming route answers with, so that its OpenAPI document says text/event-stream."""

    media_type = "text/event-stream"


def event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def token_json(tok: TokenEvent) -> dict[str, Any]:
    logprob = tok.logprob if tok.logprob is not None and math.isfinite(tok.logprob) else None
    return {"id": tok.id, "text": tok.text, "logprob": logprob, "special": tok.special}


def stream_details(done: FinishEvent, input_length: int) -> dict[str, Any]:
    return {
        "finish_reason": done.reason.value,
        "generated_tokens": done.generated_tokens,
        "input_length": input_length,
        "seed": done.seed,
    }
