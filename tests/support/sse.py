"""Read a server-sent-event stream as it arrives, with the arrival time of each event."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    at: float  # seconds since the request was sent
    data: Any  # parsed JSON, or the raw string ("[DONE]")


def stream(
    url: str, body: dict[str, Any], timeout: float = 180, client: httpx.Client | None = None
) -> tuple[int, list[Event]]:
    own = client is None
    client = client or httpx.Client(timeout=timeout)
    events: list[Event] = []
    t0 = time.perf_counter()
    try:
        with client.stream("POST", url, json=body) as response:
            buffer = b""
            for chunk in response.iter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    for line in raw.decode().splitlines():
                        if line.startswith("data:"):
                            payload = line[5:].strip()
                            data = payload if payload == "[DONE]" else json.loads(payload)
                            events.append(Event(time.perf_counter() - t0, data))
            return response.status_code, events
    finally:
        if own:
            client.close()
