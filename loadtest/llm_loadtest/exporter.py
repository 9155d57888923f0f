"""The client's view as Prometheus metrics (the load tester's own names follow Prometheus naming)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llm_loadtest.metrics import LATE_AFTER_S
from llm_loadtest.records import RequestRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
# arrival_rate: an open-loop run's requests/s; empty in closed loop, which Prometheus stores as no label at all.
LABELS = ("target", "api", "max_new_tokens", "arrival_rate")
NO_RESPONSE = "none"  # http_status of a request that got no status line: refused, reset, timed out before one


def http_status_label(code: int | None) -> str:
    """The response's status code as a label, so that a 429 and a 500 tell apart; bounded to the valid codes
    (RFC 9110: 100-599) so that a broken server cannot grow the series without limit."""
    if code is None:
        return NO_RESPONSE
    return str(code) if 100 <= code <= 599 else "invalid"


class ClientMetrics:
    """Built on an injected registry, so each process (and each test) has its own."""

    def __init__(self, registry: CollectorRegistry, users: Callable[[], float]) -> None:
        self.registry = registry
        self.ttft = Histogram(
            "llm_client_ttft_seconds",
            "Time to first token, as the client sees it",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.itl = Histogram(
            "llm_client_itl_seconds",
            "Mean inter-token latency per request",
            LABELS,
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.e2e = Histogram(
            "llm_client_e2e_seconds",
            "End-to-end latency per request",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "llm_client_output_tokens", "Output tokens counted in the streams of OK requests", LABELS, registry=registry
        )
        self.requests = Counter(
            "llm_client_requests",
            "Finished requests by status and HTTP status code",
            (*LABELS, "status", "http_status"),
            registry=registry,
        )
        self.mismatches = Counter(
            "llm_client_token_mismatches",
            "Requests whose counted and server-reported tokens differ",
            LABELS,
            registry=registry,
        )
        self.users = Gauge("llm_client_users", "Users (concurrent request loops) running", registry=registry)
        self.users.set_function(users)
        # The load generator's own health: a lost worker's in-flight requests leave no record.
        self.workers_lost = Counter(
            "llm_loadtest_workers_lost",
            "Locust workers the master marked missing (heartbeats stopped) while it ran",
            registry=registry,
        )
        self.send_lag = Histogram(
            "llm_client_send_lag_seconds",
            "Open loop: how long after its due time each request was sent",
            LABELS,
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.ttft_from_due = Histogram(
            "llm_client_ttft_from_due_seconds",
            "Open loop: time to first token from the due time (send lag included)",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.e2e_from_due = Histogram(
            "llm_client_e2e_from_due_seconds",
            "Open loop: end-to-end latency from the due time (send lag included)",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.not_sent = Counter(
            "llm_client_not_sent", "Open loop: arrivals that were due and not sent", LABELS, registry=registry
        )
        self.late = Counter(
            "llm_client_late",
            f"Open loop: requests sent more than {LATE_AFTER_S * 1000:g} ms after their due time",
            LABELS,
            registry=registry,
        )

    def observe(self, r: RequestRecord) -> None:
        labels = {
            "target": r.target,
            "api": r.api,
            "max_new_tokens": str(r.max_new_tokens),
            "arrival_rate": "" if r.rate is None else f"{r.rate:g}",
        }
        if not r.sent:
            self.not_sent.labels(**labels).inc()
            return
        lag = r.send_lag_s
        if lag is not None:
            self.send_lag.labels(**labels).observe(lag)
            if lag > LATE_AFTER_S:
                self.late.labels(**labels).inc()
        self.requests.labels(**labels, status=r.status, http_status=http_status_label(r.http_status)).inc()
        if r.token_mismatch:
            self.mismatches.labels(**labels).inc()
        if not r.ok:
            return
        self.e2e.labels(**labels).observe(r.e2e_s)
        self.tokens.labels(**labels).inc(r.output_tokens)
        if r.ttft_s is not None:
            self.ttft.labels(**labels).observe(r.ttft_s)
        if r.itl_s is not None:
            self.itl.labels(**labels).observe(r.itl_s)
        if r.ttft_from_due_s is not None:
            self.ttft_from_due.labels(**labels).observe(r.ttft_from_due_s)
        if r.e2e_from_due_s is not None:
            self.e2e_from_due.labels(**labels).observe(r.e2e_from_due_s)
