"""Read a /metrics page as written, sample names untouched; wait on a server's gauges or a Prometheus query.

prometheus_client's parser renames counters to `..._total`, which would hide the very thing we test (TGI's
counters have no suffix), so samples are read with a plain line parser and types from the `# TYPE` lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from tests.support.prometheus import query
from tests.support.waits import wait_until

if TYPE_CHECKING:
    from tests.support.servers import RunningServer

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


def gauges(samples: Samples) -> tuple[float, float, float]:
    """(queue, batch, batch max tokens): what the server holds at one scrape."""
    return (
        value(samples, "tgi_queue_size"),
        value(samples, "tgi_batch_current_size"),
        value(samples, "tgi_batch_current_max_tokens"),
    )


def wait_for_metrics(
    server: RunningServer, condition: Callable[[Samples], bool], what: str, timeout: float = 60
) -> Samples:
    """Scrape `server` until `condition` holds and return those samples; otherwise fail with the (queue, batch,
    max tokens) states seen, in order, and the server's log."""
    states: list[tuple[float, float, float]] = []

    def probe() -> Samples:
        samples, _ = scrape(server.url)
        if not states or states[-1] != gauges(samples):
            states.append(gauges(samples))
        return samples

    def show(samples: Samples) -> str:
        counters = {k[0]: v for k, v in samples.items() if k[0] in ("tgi_request_count", "tgi_request_success")}
        return f"(queue, batch, max tokens) states {states[-20:]}, {counters}"

    return wait_until(probe, condition, timeout=timeout, what=what, show=show, log=server.log, interval=0.02)


def has_data(result: list[dict]) -> bool:
    """An instant query's result holds series, none of them NaN (a quantile over a window with no observations)."""
    return bool(result) and all(float(r["value"][1]) == float(r["value"][1]) for r in result)


def targets(prom: str) -> str:
    """What Prometheus says of its scrape targets: the first thing to read when a query returns nothing."""
    active = httpx.get(f"{prom}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    return "\n".join(
        f"target {t['labels'].get('job')} {t['scrapeUrl']}: {t['health']} {t.get('lastError') or ''}" for t in active
    )


def query_until(
    prom: str,
    expr: str,
    done: Callable[[list[dict]], bool] = has_data,
    timeout: float = 60,
    log: Callable[[], str] | None = None,
    **variables: str,
) -> list[dict]:
    """Run an instant query until its result is `done` (by default: data, no NaN), once a second; otherwise fail
    with the last result, `log()` (a server's log) and, last, the scrape targets' health."""

    def context() -> str:
        try:
            health = targets(prom)
        except httpx.HTTPError as exc:
            health = f"(Prometheus did not answer: {exc})"
        return (log() if log else "") + "\n" + health

    return wait_until(lambda: query(prom, expr, **variables), done, timeout=timeout, what=expr, log=context, interval=1)
