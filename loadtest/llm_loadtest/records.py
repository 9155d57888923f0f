"""One record per request: raw timings and counts, from which every figure is derived.

Fields of `requests.jsonl` (one JSON object per line, written as each request finishes):

| field | meaning |
| --- | --- |
| `request_id` | sent as the `x-request-id` header |
| `target`, `api` | the target's name and dialect (`tgi`, `openai` or `openai-chat`) |
| `users`, `max_new_tokens` | the step this request belongs to (concurrency, 0 in open loop; token cap) |
| `rate` | open loop: the step's arrival rate, requests/s (null in closed loop) |
| `status` | `ok`, `http_error`, `stream_error`, `timeout`, `connection_error`, `not_event_stream`, `cancelled` |
| `due` | open loop: epoch seconds when the request was due (null in closed loop, where it is sent when ready) |
| `start` | epoch seconds when the request was sent (a `not_sent` arrival: when it was given up) |
| `ttft_s` | seconds from sending to the first token event (null without one) |
| `e2e_s` | seconds from sending to the end of the response (or the failure) |
| `itl_s` | mean inter-token latency: (e2e - ttft) / (output_tokens - 1); null below 2 tokens |
| `gaps_s` | every gap between consecutive tokens as they arrived, seconds (0 between tokens of one chunk) |
| `output_tokens` | tokens received in the stream (below) |
| `server_tokens` | tokens the server reported (TGI `details.generated_tokens`, OpenAI `usage.completion_tokens`) |
| `finish_reason` | as the server reported it |
| `http_status` | the response's status code (null when none arrived) |
| `error` | the error message, for any status but `ok` |
| `requested_tokens` | the output-token cap this request asked for (its own with a workload, else the step's) |
| `ignore_eos` | the request asked to generate past EOS (never in the `tgi` dialect: TGI has no such parameter) |
| `input_tokens` | the prompt's tokens in `--tokenizer`, without special tokens or chat template (null without it) |
| `server_input_tokens` | the prompt's tokens as the server counted them (OpenAI `usage.prompt_tokens`) |
| `workload_index` | the request's entry in the run's `workload.jsonl` (null without a workload) |

In open loop, status `not_sent` too: an arrival that was due and never sent (the in-flight bound reached, or the
step ended before a late generator reached it), its reason in `error`.

Tokens received: one per TGI token event. In the OpenAI dialects, per chunk, the growth of the server's running
`usage.completion_tokens` where it sends one (vLLM merges several tokens into a chunk when its API server lags
behind the engine), else one per chunk (in chat, not the role-only chunk that opens OpenAI's and vLLM's streams:
only a stream's first chunk can be one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any


class Status(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"
    STREAM_ERROR = "stream_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    NOT_EVENT_STREAM = "not_event_stream"  # a 200 whose body is something else: an HTML page from a proxy, a wrong URL
    CANCELLED = "cancelled"
    NOT_SENT = "not_sent"  # open loop: an arrival that was due and never sent; no request, so no figure but its count


# The Locust master's exit code when one of its workers was lost mid-run (locust_plugin.py; results.py flags the
# step): Locust's own codes are 0, 1 (a request failed) and 2 (its errors).
WORKER_LOST_EXIT = 3


@dataclass
class RequestRecord:
    request_id: str
    target: str
    api: str
    users: int
    max_new_tokens: int
    status: str
    start: float
    ttft_s: float | None
    e2e_s: float
    itl_s: float | None
    output_tokens: int
    server_tokens: int | None
    finish_reason: str | None
    http_status: int | None = None
    error: str | None = None
    gaps_s: list[float] = field(default_factory=list)
    requested_tokens: int | None = None
    ignore_eos: bool = False
    input_tokens: int | None = None
    server_input_tokens: int | None = None
    workload_index: int | None = None
    due: float | None = None
    rate: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def sent(self) -> bool:
        return self.status != Status.NOT_SENT

    @property
    def send_lag_s(self) -> float | None:
        """Open loop: how long after its due time the request went out (the generator's own delay)."""
        return None if self.due is None or not self.sent else self.start - self.due

    @property
    def ttft_from_due_s(self) -> float | None:
        """TTFT as a user arriving at the due time saw it: the send lag included."""
        lag = self.send_lag_s
        return None if lag is None or self.ttft_s is None else lag + self.ttft_s

    @property
    def e2e_from_due_s(self) -> float | None:
        lag = self.send_lag_s
        return None if lag is None else lag + self.e2e_s

    @property
    def refused(self) -> bool:
        """Turned away before any token: a refused connection, a 429/503, an error event before the first token
        (TGI's way of refusing a stream when overloaded), or a page instead of a stream (users back off from it too,
        rather than loop on a proxy in a tight loop)."""
        return self.output_tokens == 0 and (
            self.status in (Status.CONNECTION_ERROR, Status.STREAM_ERROR, Status.NOT_EVENT_STREAM)
            or self.http_status in (429, 503)
        )

    @property
    def token_mismatch(self) -> bool:
        """The stream and the server disagree on the number of generated tokens."""
        return self.server_tokens is not None and self.server_tokens != self.output_tokens

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


StepKey = tuple[str, int, int, float | None]  # target, users, max_new_tokens, rate


def step_key(x: Any) -> StepKey:
    """The step of a record, a summary or a step's facts: closed-loop steps differ by users, open-loop ones by rate."""
    return (x.target, x.users, x.max_new_tokens, x.rate)


# The sweep's own requests (warm-ups, calibration probes): in no step, yet the servers count them (reconcile.py).
OWN_REQUESTS_FILE = "sweep_requests.jsonl"


class RecordWriter:
    """Appends records to a JSONL file, flushed one by one: a crash loses no finished request."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, record: RequestRecord) -> None:
        self._file.write(record.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def append_records(path: Path, records: Sequence[RequestRecord]) -> None:
    writer = RecordWriter(path)
    try:
        for r in records:
            writer.write(r)
    finally:
        writer.close()


def read_records(path: Path) -> tuple[list[RequestRecord], int]:
    """Records of a JSONL file, and how many lines were unreadable (a line cut short by a kill)."""
    records: list[RequestRecord] = []
    bad = 0
    if not path.exists():
        return records, bad
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(RequestRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, AttributeError):  # AttributeError: JSON, but not an object
            bad += 1
    return records, bad
