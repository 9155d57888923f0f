"""Request bodies in TGI's schema (docs/openapi.json). Unknown fields and wrong types are refused, not ignored."""

from __future__ import annotations

from typing import Annotated, Literal

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


class OpenAIRequest(_Strict):
    """The fields OpenAI's /v1/completions and /v1/chat/completions share, with those of vLLM's that benchmark
    clients send (GuideLLM, vLLM's benchmarks). A field that would change the output in a way this service cannot
    honour is refused by `unsupported`, by name; the others are honoured or have no effect on one greedy answer."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None  # OpenAI's current name for max_tokens
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None  # vLLM's; -1 and 0 mean off
    seed: Annotated[int, Field(ge=0, lt=2**64)] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's: EOS does not end the answer, so it runs to the token cap
    min_tokens: Annotated[int, Field(ge=0)] = 0  # vLLM's: no EOS before this many tokens

    def token_cap(self) -> int | None:
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise ValueError("`max_tokens` and `max_completion_tokens` differ; send one")
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> list[str]:
        refused = []
        if self.n not in (None, 1):
            refused.append("n > 1")
        if self.frequency_penalty not in (None, 0.0):
            refused.append("frequency_penalty")
        if self.presence_penalty not in (None, 0.0):
            refused.append("presence_penalty")
        if self.logit_bias:
            refused.append("logit_bias")
        return refused


class CompletionRequest(OpenAIRequest):
    prompt: (
        Annotated[str, Field(json_schema_extra=NOT_BLANK)]
        | Annotated[list[Annotated[str, Field(json_schema_extra=NOT_BLANK)]], Field(min_length=1, max_length=1)]
    )
    suffix: str | None = None
    echo: bool = False
    best_of: int | None = None
    logprobs: bool | int | None = None

    def prompt_text(self) -> str:
        text = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        if not text.strip():
            raise ValueError("`prompt` cannot be empty")
        return text

    def unsupported(self) -> list[str]:
        refused = super().unsupported()
        if self.suffix:
            refused.append("suffix")
        if self.echo:
            refused.append("echo")
        if self.best_of not in (None, 1):
            refused.append("best_of")
        if self.logprobs is not None and self.logprobs is not False:  # even 0 asks for the chosen token's
            refused.append("logprobs")
        return refused


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    # Parts other than text (images) are refused by the union: this service serves text models.
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(_Strict):
    type: str


class ChatRequest(OpenAIRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def conversation(self) -> list[dict[str, str]]:
        """The messages as a chat template takes them."""
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def unsupported(self) -> list[str]:
        refused = super().unsupported()
        if self.logprobs:
            refused.append("logprobs")
        if self.top_logprobs:
            refused.append("top_logprobs")
        if self.tools:
            refused.append("tools")
        if self.tool_choice not in (None, "none", "auto"):
            refused.append("tool_choice")
        if self.response_format is not None and self.response_format.type != "text":
            refused.append("response_format")
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
