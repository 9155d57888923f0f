"""One streamed request, timed as the bytes arrive, turned into a RequestRecord.

Locust's FastHttpUser buffers streamed bodies (a 50 ms TTFT measured as ~400 ms at 64 streams) and requests adds
milliseconds per request, so the bytes are read with llm_loadtest.http, straight from the socket.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from llm_loadtest.dialects import DIALECTS, Dialect
from llm_loadtest.http import Connection, DeadlineExceeded, HTTPError
from llm_loadtest.records import RequestRecord, Status
from llm_loadtest.workload import PlannedRequest

MAX_ERROR_BODY = 2000


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    api: str = "tgi"

    @classmethod
    def parse(cls, spec: str, default_api: str = "tgi") -> Target:
        """`NAME=URL` or `NAME=URL@api` (api: tgi, openai or openai-chat)."""
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
    """`max_new_tokens`: the step's cap, sent unless the planned request has a cap of its own."""

    prompt: str
    max_new_tokens: int
    timeout_s: float
    users: int = 0
    model: str | None = None
    ignore_eos: bool = False  # sent where the dialect has it
    planned: PlannedRequest | None = None

    @property
    def cap(self) -> int:
        planned = self.planned.max_tokens if self.planned else None
        return planned if planned is not None else self.max_new_tokens

    due: float | None = None  # open loop: epoch seconds when the request is due
    rate: float | None = None  # open loop: the step's arrival rate, requests/s


def not_sent(target: Target, spec: RequestSpec, reason: str) -> RequestRecord:
    """The record of an open-loop arrival that was due and never sent, so that none is skipped silently."""
    return RequestRecord(
        request_id=uuid.uuid4().hex,
        target=target.name,
        api=target.api,
        users=spec.users,
        max_new_tokens=spec.max_new_tokens,
        status=Status.NOT_SENT.value,
        start=time.time(),
        ttft_s=None,
        e2e_s=0.0,
        itl_s=None,
        output_tokens=0,
        server_tokens=None,
        finish_reason=None,
        error=reason,
        due=spec.due,
        rate=spec.rate,
    )


def stream_request(
    conn: Connection,
    target: Target,
    spec: RequestSpec,
    on_cancel: Callable[[RequestRecord], None] | None = None,
) -> RequestRecord:
    """Send one request and time it. When the load tester itself stops the request (Locust killing its users,
    Ctrl-C), `on_cancel` gets a `cancelled` record before the stop goes on, so no sent request goes unrecorded."""
    dialect: Dialect = DIALECTS[target.api]
    request_id = uuid.uuid4().hex
    start = time.time()
    t0 = time.perf_counter()
    arrivals: list[float] = []
    state: dict = {"server_tokens": None, "finish_reason": None, "http_status": None, "prompt_tokens": None}
    ignore_eos = spec.ignore_eos and dialect.honours_ignore_eos
    planned = spec.planned

    def record(status: Status, error: str | None = None) -> RequestRecord:
        e2e = state["end"] if "end" in state else time.perf_counter() - t0
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
            requested_tokens=spec.cap,
            ignore_eos=ignore_eos,
            input_tokens=planned.input_tokens if planned else None,
            server_input_tokens=state["prompt_tokens"],
            workload_index=planned.index if planned else None,
            due=spec.due,
            rate=spec.rate,
        )

    messages = planned.messages if planned else None
    body = dialect.body(spec.prompt, spec.cap, spec.model, messages=messages, ignore_eos=ignore_eos)
    headers = {"x-request-id": request_id, "Accept": "text/event-stream"}
    try:
        resp = conn.post_stream(dialect.path, body, headers, spec.timeout_s)
        state["http_status"] = resp.status
        if resp.status != 200:
            text = b"".join(resp.body)[:MAX_ERROR_BODY].decode(errors="replace")
            return record(Status.HTTP_ERROR, f"HTTP {resp.status}: {text}")
        content_type = resp.headers.get("content-type", "")
        if content_type and not content_type.lower().startswith("text/event-stream"):
            # A misrouted proxy or a wrong URL answers 200 with a page: say so, not "the stream ended early".
            text = b"".join(resp.body)[:MAX_ERROR_BODY].decode(errors="replace")
            return record(
                Status.NOT_EVENT_STREAM, f"HTTP 200 with Content-Type {content_type}, not an event stream: {text}"
            )
        buffer = b""
        opened = False  # an event has been parsed
        for chunk in resp.body:
            now = time.perf_counter() - t0
            buffer += chunk
            if b"\r" in buffer:
                buffer = buffer.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                data = b"\n".join(ln[5:].lstrip() for ln in raw.split(b"\n") if ln.startswith(b"data:"))
                if not data:
                    continue
                parsed = dialect.parse(data, first=not opened)
                opened = True
                if parsed.error is not None:
                    conn.close()
                    return record(Status.STREAM_ERROR, parsed.error)
                count = parsed.tokens
                if parsed.running_tokens is not None:  # tokens merged into one chunk arrive together
                    count = max(parsed.running_tokens - len(arrivals), 0)
                arrivals.extend([now] * count)
                if parsed.server_tokens is not None:
                    state["server_tokens"] = parsed.server_tokens
                if parsed.prompt_tokens is not None:
                    state["prompt_tokens"] = parsed.prompt_tokens
                if parsed.finish_reason is not None:
                    state["finish_reason"] = parsed.finish_reason
                if parsed.done and "end" not in state:
                    # The end of the answer. The closing bytes are still read, so that the connection stays
                    # usable for the next request instead of being dropped.
                    state["end"] = now
        if "end" in state or (dialect.finish_is_final and state["finish_reason"] is not None):
            return record(Status.OK)
        conn.close()
        if not arrivals and buffer.strip() and b"data:" not in buffer:  # no Content-Type, and no event in the body
            text = buffer[:MAX_ERROR_BODY].decode(errors="replace")
            return record(Status.NOT_EVENT_STREAM, f"HTTP 200 without an event stream: {text}")
        return record(Status.CONNECTION_ERROR, "the stream ended before its final event")
    except DeadlineExceeded:
        conn.close()
        return record(Status.TIMEOUT, f"no end after {spec.timeout_s:g}s")
    except (HTTPError, OSError) as exc:
        conn.close()
        return record(Status.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")
    except ValueError as exc:  # an event that is not JSON
        conn.close()
        return record(Status.STREAM_ERROR, f"unparseable event: {exc}")
    except BaseException:  # GreenletExit, KeyboardInterrupt: not the server's doing
        conn.close()
        if on_cancel is not None:
            on_cancel(record(Status.CANCELLED, "stopped by the load tester before the end"))
        raise
