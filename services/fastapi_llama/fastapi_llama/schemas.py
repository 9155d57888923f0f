"""Request bodies in TGI's schema (docs/openapi.json). Unknown fields and wrong types are refused, not ignored."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP_SEQUENCES = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateParameters(_Strict):
    max_new_tokens: Annotated[int, Field(ge=1)] | None = None
    do_sample: bool = False
    temperature: Annotated[float, Field(gt=0)] | None = None
    top_k: Annotated[int, Field(gt=0)] | None = None
    top_p: Annotated[float, Field(gt=0, lt=1)] | None = None
    typical_p: Annotated[float, Field(gt=0, lt=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**64)] | None = None
    stop: Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] = []
    details: bool = True
    return_full_text: bool | None = None
    truncate: Annotated[int, Field(ge=1)] | None = None
    # Accepted by TGI; refused here with a 422 when set to anything but their neutral value (see unsupported()).
    best_of: int | None = None
    decoder_input_details: bool = False
    top_n_tokens: int | None = None
    watermark: bool = False
    frequency_penalty: float | None = None
    grammar: dict | None = None
    adapter_id: str | None = None

    def unsupported(self) -> list[str]:
        """Parameters TGI honours that this service does not; each is named in the 422 it causes."""
        refused = []
        if self.best_of not in (None, 1):
            refused.append("best_of")
        if self.decoder_input_details:
            refused.append("decoder_input_details")
        if self.top_n_tokens not in (None, 0):
            refused.append("top_n_tokens")
        if self.watermark:
            refused.append("watermark")
        if self.frequency_penalty not in (None, 0.0):
            refused.append("frequency_penalty")
        if self.grammar is not None:
            refused.append("grammar")
        if self.adapter_id not in (None, ""):
            refused.append("adapter_id")
        return refused


# Documented in the schema (TGI's own leaves it out, yet refuses empty inputs); checked by the validators below,
# which give TGI's message rather than a regex's.
NOT_BLANK = {"minLength": 1, "pattern": r"\S"}


class GenerateRequest(_Strict):
    inputs: Annotated[str, Field(json_schema_extra=NOT_BLANK)]
    parameters: GenerateParameters = GenerateParameters()

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("`inputs` cannot be empty")
        return value


class CompatGenerateRequest(GenerateRequest):
    stream: bool = False


class StreamOptions(_Strict):
    include_usage: bool = False
    # vLLM's extension, beyond TGI's schema: usage on every chunk, so a client counts tokens exactly.
    continuous_usage_stats: bool = False


class CompletionRequest(_Strict):
    prompt: (
        Annotated[str, Field(json_schema_extra=NOT_BLANK)]
        | Annotated[list[Annotated[str, Field(json_schema_extra=NOT_BLANK)]], Field(min_length=1, max_length=1)]
    )
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**64)] | None = None
    stop: Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    frequency_penalty: float | None = None
    suffix: str | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    user: str | None = None

    def prompt_text(self) -> str:
        text = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        if not text.strip():
            raise ValueError("`prompt` cannot be empty")
        return text

    def unsupported(self) -> list[str]:
        refused = []
        if self.frequency_penalty not in (None, 0.0):
            refused.append("frequency_penalty")
        if self.suffix:
            refused.append("suffix")
        return refused


class ErrorResponse(BaseModel):
    """TGI's error body."""

    error: str
    error_type: str


# The refusals every generation route may answer with, as TGI documents them (400 becomes 422, as TGI does).
ERROR_RESPONSES: dict[int | str, dict] = {
    413: {"description": "Request body too large", "model": ErrorResponse},
    422: {"description": "Input validation error", "model": ErrorResponse},
    424: {"description": "Generation error", "model": ErrorResponse},
    429: {"description": "Model is overloaded", "model": ErrorResponse},
}
# One server-sent event: its `data` is a JSON document (StreamResponse, an OpenAI chunk, or ErrorResponse).
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {"data": {"type": "string", "contentMediaType": "application/json"}},
            "required": ["data"],
        }
    }
}
_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
# /generate_stream answers events, yet its refusals are JSON: said explicitly, the route's media type being events.
STREAM_RESPONSES: dict[int | str, dict] = {
    200: {"description": "Tokens as server-sent events", "content": EVENT_STREAM},
    **{status: {"description": r["description"], "content": _ERROR_JSON} for status, r in ERROR_RESPONSES.items()},
}
# Routes that answer JSON, or events when the body asks for `stream`.
JSON_OR_EVENTS_RESPONSES = {
    **ERROR_RESPONSES,
    200: {"description": "The answer, or its tokens as server-sent events", "content": EVENT_STREAM},
}
