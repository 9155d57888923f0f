"""One streamed request, timed as the bytes arrive, turned into a RequestRecord.

`requests` with `iter_content(chunk_size=None)` hands over each chunk the moment the socket delivers it; Locust's
FastHttpUser buffers (a 50 ms TTFT measured as ~400 ms at 64 streams), so it is not used here.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass

import requests

from llm_loadtest.dialects import DIALECTS, Dialect
from llm_loadtest.records import RequestRecord, Status

MAX_ERROR_BODY = 2000


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    api: str = "tgi"

    @classmethod
    def parse(cls, spec: str, default_api: str = "tgi") -> Target:
        """`NAME=URL` or `NAME=URL@api` (api: tgi or openai)."""
        if "=" not in spec:
            raise ValueError(f"target {spec!r}: expected NAME=URL, e.g. tgi=http://127.0.0.1:8080")
        name, url = spec.split("=", 1)
        api = default_api
        if "@" in url.rsplit("/", 1)[-1]:
            url, api = url.rsplit("@", 1)
        if not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"target {spec!r}: NAME must be set and URL must start with http:// or https://")
        if api not in DIALECTS:
            raise ValueError(f"target {spec!r}: api must be one of {', '.join(DIALECTS)}")
        return cls(name, url.rstrip("/"), api)


@dataclass(frozen=True)
class RequestSpec:
    prompt: str
    max_new_tokens: int
    timeout_s: float
    users: int = 0
    model: str | None = None


def stream_request(session: requests.Session, target: Target, spec: RequestSpec) -> RequestRecord:
    dialect: Dialect = DIALECTS[target.api]
    request_id = uuid.uuid4().hex
    start = time.time()
    t0 = time.perf_counter()
    arrivals: list[float] = []
    state = {"server_tokens": None, "finish_reason": None, "http_status": None}

    def record(status: Status, error: str | None = None) -> RequestRecord:
        e2e = time.perf_counter() - t0
        n = len(arrivals)
        ttft = arrivals[0] if arrivals else None
        itl = (e2e - ttft) / (n - 1) if ttft is not None and n >= 2 else None
        return RequestRecord(
            request_id=request_id,
            target=target.name,
            api=target.api,
            users=spec.users,
            max_new_tokens=spec.max_new_tokens,
            status=status.value,
            start=start,
            ttft_s=ttft,
            e2e_s=e2e,
            itl_s=itl,
            output_tokens=n,
            server_tokens=state["server_tokens"],
            finish_reason=state["finish_reason"],
            http_status=state["http_status"],
            error=error,
            gaps_s=[b - a for a, b in itertools.pairwise(arrivals)],
        )

    body = dialect.body(spec.prompt, spec.max_new_tokens, spec.model)
    try:
        with session.post(
            target.url + dialect.path,
            json=body,
            stream=True,
            timeout=(min(10.0, spec.timeout_s), spec.timeout_s),
            headers={"x-request-id": request_id, "accept": "text/event-stream"},
        ) as resp:
            state["http_status"] = resp.status_code
            if resp.status_code != 200:
                return record(Status.HTTP_ERROR, f"HTTP {resp.status_code}: {resp.text[:MAX_ERROR_BODY]}")
            buffer = b""
            for chunk in resp.iter_content(chunk_size=None):
                now = time.perf_counter() - t0
                if now > spec.timeout_s:
                    return record(Status.TIMEOUT, f"no end after {spec.timeout_s:g}s")
                buffer += chunk.replace(b"\r\n", b"\n")
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    data = b"\n".join(ln[5:].lstrip() for ln in raw.split(b"\n") if ln.startswith(b"data:"))
                    if not data:
                        continue
                    parsed = dialect.parse(data)
                    if parsed.error is not None:
                        return record(Status.STREAM_ERROR, parsed.error)
                    arrivals.extend([now] * parsed.tokens)
                    if parsed.server_tokens is not None:
                        state["server_tokens"] = parsed.server_tokens
                    if parsed.finish_reason is not None:
                        state["finish_reason"] = parsed.finish_reason
                    if parsed.done:
                        if target.api == "tgi":  # the final event carries everything; nothing follows
                            return record(Status.OK)
                        state["done"] = True
            if state.get("done") or (target.api == "openai" and state["finish_reason"] is not None):
                return record(Status.OK)
            return record(Status.CONNECTION_ERROR, "the stream ended before its final event")
    except (requests.Timeout, TimeoutError) as exc:
        return record(Status.TIMEOUT, f"{type(exc).__name__}: {exc}")
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, OSError) as exc:
        return record(Status.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")
    except ValueError as exc:  # an event that is not JSON
        return record(Status.STREAM_ERROR, f"unparseable event: {exc}")
