"""Read a /metrics page as written, sample names untouched.

prometheus_client's parser renames counters to `..._total`, which would hide the very thing we test (TGI's
counters have no suffix), so samples are read with a plain line parser and types from the `# TYPE` lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            if m is None:
                raise ValueError(f"not an exposition line: {line!r}")
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    return parse(httpx.get(f"{url}/metrics", timeout=10).text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(url: str, condition: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    """Scrape every 10 ms until `condition` holds; the last samples either way (the caller asserts on them)."""
    deadline = time.monotonic() + timeout
    while True:
        samples, _ = scrape(url)
        if condition(samples) or time.monotonic() >= deadline:
            return samples
        time.sleep(0.01)


def in_flight(samples: Samples) -> float:
    """Requests the server holds: queued or generating."""
    return value(samples, "tgi_queue_size") + value(samples, "tgi_batch_current_size")
