"""TGI's metric names and types, exposed in Prometheus' text format.

TGI's router (Rust, metrics-exporter-prometheus) exposes counters without the `_total` suffix
(`tgi_request_count`, `tgi_request_success`), which prometheus_client always appends. One dashboard must read
both servers, so this module renders the exposition itself: a few thread-safe metric types, no global registry.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

# LLM latencies span milliseconds (one decode step) to minutes (a long generation behind a queue).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

LabelValues = tuple[str, ...]


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{v}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


@dataclass
class _Metric:
    name: str
    help: str
    label_names: tuple[str, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _key(self, labels: dict[str, str] | None) -> LabelValues:
        labels = labels or {}
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: expected labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)


@dataclass
class Counter(_Metric):
    _values: dict[LabelValues, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.label_names:
            items = [((), 0.0)]
        lines += [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]
        return lines


@dataclass
class Gauge(_Metric):
    _value: float = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_fmt(self._value)}"]


@dataclass
class Histogram(_Metric):
    buckets: tuple[float, ...] = DURATION_BUCKETS
    _counts: list[int] = field(default_factory=list)
    _sum: float = 0.0
    _count: int = 0

    def __post_init__(self) -> None:
        self._counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            self._count += 1
            for i, upper in enumerate(self.buckets):
                if value <= upper:
                    self._counts[i] += 1

    def render(self) -> list[str]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        lines += [f'{self.name}_bucket{{le="{_fmt(b)}"}} {c}' for b, c in zip(self.buckets, counts, strict=True)]
        lines += [f'{self.name}_bucket{{le="+Inf"}} {n}', f"{self.name}_sum {_fmt(total)}", f"{self.name}_count {n}"]
        return lines


@dataclass
class ServerMetrics:
    """The TGI metrics that apply to a single-process transformers server, created per app (no global state)."""

    request_count: Counter = field(default_factory=lambda: Counter("tgi_request_count", "Total number of requests"))
    request_success: Counter = field(
        default_factory=lambda: Counter("tgi_request_success", "Number of successful requests")
    )
    request_failure: Counter = field(
        default_factory=lambda: Counter("tgi_request_failure", "Number of failed requests, by error type", ("err",))
    )
    request_duration: Histogram = field(
        default_factory=lambda: Histogram("tgi_request_duration", "Request duration, end to end (seconds)")
    )
    request_queue_duration: Histogram = field(
        default_factory=lambda: Histogram("tgi_request_queue_duration", "Time spent in the queue (seconds)")
    )
    request_inference_duration: Histogram = field(
        default_factory=lambda: Histogram("tgi_request_inference_duration", "Time spent generating (seconds)")
    )
    request_mean_time_per_token_duration: Histogram = field(
        default_factory=lambda: Histogram(
            "tgi_request_mean_time_per_token_duration",
            "Inference duration divided by generated tokens (seconds)",
            buckets=PER_TOKEN_BUCKETS,
        )
    )
    request_generated_tokens: Histogram = field(
        default_factory=lambda: Histogram(
            "tgi_request_generated_tokens", "Tokens generated per request", buckets=TOKEN_BUCKETS
        )
    )
    request_input_length: Histogram = field(
        default_factory=lambda: Histogram("tgi_request_input_length", "Input tokens per request", buckets=TOKEN_BUCKETS)
    )
    request_max_new_tokens: Histogram = field(
        default_factory=lambda: Histogram(
            "tgi_request_max_new_tokens", "max_new_tokens asked per request", buckets=TOKEN_BUCKETS
        )
    )
    queue_size: Gauge = field(default_factory=lambda: Gauge("tgi_queue_size", "Requests waiting to be scheduled"))
    batch_current_size: Gauge = field(
        default_factory=lambda: Gauge("tgi_batch_current_size", "Requests in the batch being generated")
    )
    batch_current_max_tokens: Gauge = field(
        default_factory=lambda: Gauge(
            "tgi_batch_current_max_tokens", "Tokens the current batch may occupy (input + max_new_tokens)"
        )
    )

    def all(self) -> list[Counter | Gauge | Histogram]:
        return [v for v in vars(self).values() if isinstance(v, Counter | Gauge | Histogram)]

    def observe_engine(self, queued: int, running: int, running_max_tokens: int) -> None:
        self.queue_size.set(queued)
        self.batch_current_size.set(running)
        self.batch_current_max_tokens.set(running_max_tokens)

    def render(self) -> str:
        return "\n".join(line for metric in self.all() for line in metric.render()) + "\n"
