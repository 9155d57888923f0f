"""Live figures over a sliding window of recent requests, for the web-UI tab. The figures are metrics.summarize's,
over the window."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from llm_loadtest.metrics import summarize
from llm_loadtest.records import RequestRecord


def _ms(v: float | None) -> str:
    return f"{v * 1000:.0f}" if v is not None else "-"


@dataclass
class LiveWindow:
    """Requests that finished in the last `window_s` seconds, by target."""

    window_s: float = 10.0
    _records: deque[tuple[float, RequestRecord]] = field(default_factory=deque)
    totals: Counter[str] = field(default_factory=Counter)

    def add(self, record: RequestRecord, now: float | None = None) -> None:
        self._records.append((now if now is not None else time.time(), record))
        self.totals[record.status] += 1

    def reset(self) -> None:
        self._records.clear()
        self.totals.clear()

    def rows(self, now: float | None = None) -> list[dict[str, object]]:
        now = now if now is not None else time.time()
        while self._records and self._records[0][0] < now - self.window_s:
            self._records.popleft()
        by_target: dict[str, list[RequestRecord]] = {}
        for _, r in self._records:
            by_target.setdefault(r.target, []).append(r)
        rows = []
        for target, recs in sorted(by_target.items()):
            rate = recs[-1].rate
            s = summarize(
                [r for r in recs if r.rate == rate],  # a rate changed from the web UI: the latest run's
                target=target,
                api=recs[0].api,
                users=0,
                max_new_tokens=0,
                wall_s=self.window_s,
                live=True,
                rate=rate,
            )
            rows.append(
                {
                    "target": target,
                    "tok_s": f"{s.output_tok_s:.1f}",
                    "ttft_p50_ms": _ms(s.ttft_p50_s),
                    "ttft_p95_ms": _ms(s.ttft_p95_s),
                    "itl_p50_ms": _ms(s.itl_p50_s),
                    "itl_p95_ms": _ms(s.itl_p95_s),
                    "ttft_from_due_p95_ms": _ms(s.ttft_from_due_p95_s),
                    "send_lag_p99_ms": _ms(s.send_lag_p99_s),
                    "ok": str(s.ok),
                    **{k: str(v) for k, v in s.errors.items()},
                    "not_sent": str(s.not_sent),
                }
            )
        return rows
