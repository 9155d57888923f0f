"""A synthetic LLM server with known timings, for measuring the load tester itself.

It speaks just enough HTTP/1.1 (keep-alive, chunked responses) to stream TGI's /generate_stream and OpenAI's
/v1/completions and /v1/chat/completions (which opens with a role-only chunk, as OpenAI's and vLLM's do). Token i
of a request is sent at t0 + ttft + i * gap, on absolute deadlines, so scheduling jitter never accumulates.
Behaviours, chosen per server or cycled with `--behavior mixed`:

  ok            stream `--tokens` tokens (or max_new_tokens, whichever is smaller) and finish
  stream_error  send a few tokens, then TGI's in-stream error event (as TGI does when overloaded)
  http_429      answer 429 with TGI's error body
  stall         send the headers and one token, then nothing (the client must time out)
  disconnect    send a few tokens, then close the connection mid-stream
  merge         OpenAI dialect: send tokens three to a chunk, as vLLM does when its API server lags the engine
  merge_silent  the same, without the running usage count a client asks for with continuous_usage_stats

Asked with `stream_options.continuous_usage_stats`, OpenAI chunks carry the running usage count (as vLLM's do).

A known capacity: with `--slow-above N`, a request that arrives while more than N are in flight (itself included)
has its TTFT and gaps multiplied by `--slow-factor`, so a capacity search must find N. With `--max-num-seqs N` (as
vLLM's), at most N requests stream at once and the others wait for a slot in arrival order, their TTFT growing by
the wait: a server that queues, whose latency under open-loop load beyond N / (request time) requests/s grows for
as long as the load lasts. `GET /metrics` exports TGI's
request counters, generated tokens and durations (what the reconciliation compares with the client's records);
`--metrics-skip-every K` leaves every Kth request out of them: a server whose metrics lie.

Run: python -m llm_loadtest.synthetic_server --port 9000 --ttft-ms 50 --gap-ms 10 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from dataclasses import dataclass

BEHAVIORS = ("ok", "stream_error", "http_429", "stall", "disconnect", "merge", "merge_silent")
MERGED = 3  # tokens per chunk when merging
MIXED_CYCLE = ("ok", "stream_error", "ok", "http_429", "ok", "disconnect", "ok", "stall")


@dataclass(frozen=True)
class Config:
    ttft_s: float = 0.05
    gap_s: float = 0.01
    tokens: int = 64
    behavior: str = "ok"
    log: str | None = None  # JSON lines: request id, epoch times of receipt and of each token (merged: when made)
    slow_above: int | None = None  # more requests in flight than this at arrival: this one is slow
    slow_factor: float = 10.0
    metrics_skip_every: int = 0  # 0: /metrics counts every request
    max_num_seqs: int | None = None  # at most this many stream at once; the others queue


@dataclass
class Counts:
    """What /metrics reports, in TGI's names (counters without `_total`, as TGI writes them)."""

    request_count: int = 0
    request_success: int = 0
    generated_tokens: int = 0
    duration_s: float = 0.0

    def exposition(self) -> bytes:
        lines = []
        for name, value in (("tgi_request_count", self.request_count), ("tgi_request_success", self.request_success)):
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        histograms = (
            ("tgi_request_generated_tokens", self.generated_tokens),
            ("tgi_request_duration", self.duration_s),
        )
        for name, total in histograms:
            lines += [
                f"# TYPE {name} histogram",
                f'{name}_bucket{{le="+Inf"}} {self.request_success}',
                f"{name}_sum {total}",
                f"{name}_count {self.request_success}",
            ]
        return ("\n".join(lines) + "\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: object) -> bytes:
    return _chunk(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


class SyntheticServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._cycle = itertools.cycle(MIXED_CYCLE)
        self._log = open(config.log, "a") if config.log else None  # noqa: SIM115 - lives with the server
        self.in_flight = 0
        self.arrivals = 0
        self.counts = Counts()
        self.slots = asyncio.Semaphore(config.max_num_seqs) if config.max_num_seqs else None  # FIFO waiters

    def _behavior(self) -> str:
        return next(self._cycle) if self.config.behavior == "mixed" else self.config.behavior

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = line.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                method, path, _ = request_line.decode().split(" ", 2)
                if method == "GET" and path == "/health":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                if method == "GET" and path == "/metrics":
                    page = self.counts.exposition()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n")
                    writer.write(f"content-length: {len(page)}\r\n\r\n".encode() + page)
                    await writer.drain()
                    continue
                received = time.time()
                self.in_flight += 1
                try:
                    done = await self.stream(writer, path, json.loads(body or b"{}"), headers, received)
                finally:
                    self.in_flight -= 1
                if not done:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def stream(
        self, writer: asyncio.StreamWriter, path: str, body: dict, headers: dict[str, str], received: float
    ) -> bool:
        """Answer one request, once a slot is free (`--max-num-seqs`); False when the connection must close."""
        if self.slots is None:
            return await self.answer(writer, path, body, headers, received)
        async with self.slots:
            return await self.answer(writer, path, body, headers, received)

    async def answer(
        self, writer: asyncio.StreamWriter, path: str, body: dict, headers: dict[str, str], received: float
    ) -> bool:
        t0 = time.perf_counter()
        sent: list[float] = []
        loop = asyncio.get_running_loop()
        behavior = self._behavior()
        self.arrivals += 1
        counted = not (self.config.metrics_skip_every and self.arrivals % self.config.metrics_skip_every == 0)
        self.counts.request_count += int(counted)
        slow = self.config.slow_above is not None and self.in_flight > self.config.slow_above
        scale = self.config.slow_factor if slow else 1.0
        ttft_s, gap_s = self.config.ttft_s * scale, self.config.gap_s * scale
        openai = path.startswith("/v1/")
        chat = path.startswith("/v1/chat/")
        if openai:
            cap = body.get("max_completion_tokens") or body.get("max_tokens")
        else:
            cap = body.get("parameters", {}).get("max_new_tokens")
        n = min(self.config.tokens, cap or self.config.tokens)
        if behavior == "http_429":
            err = json.dumps({"error": "Model is overloaded", "error_type": "overloaded"}).encode()
            writer.write(
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(err)}\r\n\r\n".encode()
                + err
            )
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        stop_after = {"stream_error": 3, "disconnect": 3, "stall": 1}.get(behavior, n)
        per_chunk = MERGED if openai and behavior.startswith("merge") else 1
        options = body.get("stream_options") or {}
        running_usage = behavior != "merge_silent" and bool(options.get("continuous_usage_stats"))
        if chat:  # sent with the headers: it carries no token, so it must not move the client's first-token time
            writer.write(_openai_event("", None, 0 if running_usage else None, chat, role_only=True))
        for i in range(min(n, stop_after)):
            delay = t0 + ttft_s + i * gap_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            last = i == n - 1
            sent.append(time.time())
            if (i + 1) % per_chunk and not last:
                continue  # held back, sent with the chunk's last token
            if openai:
                text = "".join(f" t{k}" for k in range(i + 1 - per_chunk, i + 1) if k >= 0)
                writer.write(_openai_event(text, last, i + 1 if running_usage else None, chat))
            else:
                writer.write(_tgi_event(i, last, n))
            await writer.drain()
        if self._log is not None:
            entry = {"request_id": headers.get("x-request-id"), "received": received, "sent": sent}
            self._log.write(json.dumps(entry) + "\n")
            self._log.flush()
        if behavior == "stream_error":
            writer.write(_event({"error": "Model is overloaded", "error_type": "overloaded"}) + b"0\r\n\r\n")
        elif behavior == "disconnect":
            writer.transport.abort()
            return False
        elif behavior == "stall":
            await loop.create_future()  # never answers; the client's timeout ends it
        else:
            if openai:
                usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
                writer.write(_event({"choices": [], "usage": usage}) + _chunk(b"data: [DONE]\n\n"))
            writer.write(b"0\r\n\r\n")
            if counted:
                self.counts.request_success += 1
                self.counts.generated_tokens += n
                self.counts.duration_s += time.time() - received
        await writer.drain()
        return True


def _tgi_event(i: int, last: bool, n: int) -> bytes:
    event = {
        "index": i,
        "token": {"id": 7, "text": f" t{i}", "logprob": None, "special": False},
        "generated_text": None,
        "details": None,
    }
    if last:
        event["generated_text"] = "".join(f" t{k}" for k in range(n))
        event["details"] = {"finish_reason": "length", "generated_tokens": n, "input_length": 5, "seed": None}
    return _event(event)


def _openai_event(
    text: str, last: bool | None, running_tokens: int | None, chat: bool = False, role_only: bool = False
) -> bytes:
    if chat:
        delta = {"role": "assistant", "content": ""} if role_only else {"content": text}
        choice: dict = {"index": 0, "delta": delta, "finish_reason": "length" if last else None}
    else:
        choice = {"index": 0, "text": text, "finish_reason": "length" if last else ""}
    chunk: dict = {
        "id": "chatcmpl-synthetic" if chat else "cmpl-synthetic",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 0,
        "model": "synthetic",
        "system_fingerprint": "synthetic",
        "choices": [choice],
    }
    if running_tokens is not None:
        chunk["usage"] = {"prompt_tokens": 5, "completion_tokens": running_tokens, "total_tokens": 5 + running_tokens}
    return _event(chunk)


async def serve(host: str, port: int, config: Config) -> None:
    server = SyntheticServer(config)
    srv = await asyncio.start_server(server.handle, host, port, backlog=1024)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttft-ms", type=float, default=50)
    p.add_argument("--gap-ms", type=float, default=10)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--behavior", choices=(*BEHAVIORS, "mixed"), default="ok")
    p.add_argument("--log", default=None, help="append each request's send times here (JSON lines)")
    p.add_argument(
        "--slow-above",
        type=int,
        default=None,
        help="a request arriving while more than this many are in flight (itself included) is slowed down",
    )
    p.add_argument("--slow-factor", type=float, default=10.0, help="TTFT and gaps of a slowed request, times this")
    p.add_argument(
        "--metrics-skip-every", type=int, default=0, help="leave every Kth request out of /metrics (0: none)"
    )
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="stream at most this many requests at once; the others wait for a slot in arrival order",
    )
    a = p.parse_args()
    config = Config(
        a.ttft_ms / 1000,
        a.gap_ms / 1000,
        a.tokens,
        a.behavior,
        a.log,
        a.slow_above,
        a.slow_factor,
        a.metrics_skip_every,
        a.max_num_seqs,
    )
    asyncio.run(serve(a.host, a.port, config))


if __name__ == "__main__":
    main()
