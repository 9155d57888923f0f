"""The streaming dialects a target may speak: TGI's /generate_stream, OpenAI's /v1/completions and OpenAI's
/v1/chat/completions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Parsed:
    """What one server-sent event says."""

    tokens: int = 0  # token events in it (0 or 1)
    done: bool = False
    finish_reason: str | None = None
    server_tokens: int | None = None  # the server's count of generated tokens, so far or in all
    running_tokens: int | None = None  # on a token chunk: the server's count of tokens generated up to it
    prompt_tokens: int | None = None  # the server's count of the prompt's tokens (OpenAI usage)
    error: str | None = None


class Dialect(Protocol):
    name: str
    path: str
    # Does a chunk with a finish_reason end the answer, even if the stream then closes without its last event?
    finish_is_final: bool
    # Can a request ask the server to generate past EOS, up to its cap (vLLM's ignore_eos)?
    honours_ignore_eos: bool

    def body(
        self,
        prompt: str,
        max_new_tokens: int,
        model: str | None,
        *,
        messages: list[dict[str, str]] | None = None,
        ignore_eos: bool = False,
    ) -> dict[str, Any]: ...

    # `first`: the stream's first event, the only one that may be an opener carrying no token.
    def parse(self, data: bytes, *, first: bool = False) -> Parsed: ...


class TGI:
    name = "tgi"
    path = "/generate_stream"
    finish_is_final = False
    honours_ignore_eos = False  # TGI's API has no such parameter (and fastapi-llama's TGI routes follow it)

    def body(
        self,
        prompt: str,
        max_new_tokens: int,
        model: str | None,
        *,
        messages: list[dict[str, str]] | None = None,
        ignore_eos: bool = False,
    ) -> dict[str, Any]:
        return {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}

    def parse(self, data: bytes, *, first: bool = False) -> Parsed:
        event = json.loads(data)
        if "error" in event:  # TGI reports overload and failures inside a 200 stream
            return Parsed(error=f"{event.get('error_type', 'error')}: {event['error']}")
        parsed = Parsed(tokens=1 if "token" in event else 0)
        if event.get("generated_text") is not None:
            parsed.done = True
            details = event.get("details") or {}
            parsed.finish_reason = details.get("finish_reason")
            parsed.server_tokens = details.get("generated_tokens")
        return parsed


class OpenAI:
    name = "openai"
    path = "/v1/completions"
    finish_is_final = True
    honours_ignore_eos = True  # vLLM's extension, honoured by vLLM and fastapi-llama; TGI has no such parameter

    def prompt_fields(self, prompt: str, messages: list[dict[str, str]] | None) -> dict[str, Any]:
        return {"prompt": prompt}

    def counts_as_token(self, choice: dict[str, Any], first: bool) -> bool:
        return True

    def body(
        self,
        prompt: str,
        max_new_tokens: int,
        model: str | None,
        *,
        messages: list[dict[str, str]] | None = None,
        ignore_eos: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self.prompt_fields(prompt, messages),
            "max_tokens": max_new_tokens,
            "stream": True,
            # continuous_usage_stats (vLLM, fastapi-llama) puts the running token count on every chunk:
            # vLLM merges several tokens into one chunk when its API server falls behind the engine.
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            "temperature": 0,
        }
        if model:
            body["model"] = model
        if ignore_eos:
            body["ignore_eos"] = True
        return body

    def parse(self, data: bytes, *, first: bool = False) -> Parsed:
        if data.strip() == b"[DONE]":
            return Parsed(done=True)
        event = json.loads(data)
        if "error" in event:
            err = event["error"]
            return Parsed(error=err.get("message", str(err)) if isinstance(err, dict) else str(err))
        parsed = Parsed()
        choices = event.get("choices") or []
        usage = event.get("usage")
        if usage:
            parsed.server_tokens = usage.get("completion_tokens")
            parsed.prompt_tokens = usage.get("prompt_tokens")
        if choices:
            # Without a running count, one chunk is one token (TGI sends one per token, even when its text is
            # empty); a server that merges tokens without the count then shows up as a mismatch with `usage`.
            parsed.tokens = 1 if self.counts_as_token(choices[0], first) else 0
            parsed.finish_reason = choices[0].get("finish_reason") or None
            parsed.running_tokens = parsed.server_tokens
        return parsed


class OpenAIChat(OpenAI):
    """The same chunks, usage and errors as `openai`; the prompt goes as one user message (the server applies its
    chat template) and each chunk's text is in `delta.content`."""

    name = "openai-chat"
    path = "/v1/chat/completions"

    def prompt_fields(self, prompt: str, messages: list[dict[str, str]] | None) -> dict[str, Any]:
        return {"messages": messages if messages is not None else [{"role": "user", "content": prompt}]}

    def counts_as_token(self, choice: dict[str, Any], first: bool) -> bool:
        # OpenAI and vLLM open the stream with a chunk that only names the role; it carries no token. TGI and
        # fastapi-llama name the role in every chunk and send no opener: later, a role without text is a token
        # whose text is not printable yet (half of a UTF-8 character), which their final usage counts.
        delta = choice.get("delta") or {}
        opening = first and "role" in delta and not delta.get("content") and not choice.get("finish_reason")
        return not opening


DIALECTS: dict[str, Dialect] = {"tgi": TGI(), "openai": OpenAI(), "openai-chat": OpenAIChat()}
