"""Live figures over a sliding window of recent requests, for the web-UI tab."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from llm_loadtest.metrics import STATUSES, percentile
from llm_loadtest.records import RequestRecord


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
            ok = [r for r in recs if r.ok]
            ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
            itl = [r.itl_s for r in ok if r.itl_s is not None]
            statuses = Counter(r.status for r in recs)

            def ms(v: float | None) -> str:
                return f"{v * 1000:.0f}" if v is not None else "-"

            rows.append(
                {
                    "target": target,
                    "tok_s": f"{sum(r.output_tokens for r in ok) / self.window_s:.1f}",
                    "ttft_p50_ms": ms(percentile(ttft, 50)),
                    "ttft_p95_ms": ms(percentile(ttft, 95)),
                    "itl_p50_ms": ms(percentile(itl, 50)),
                    "itl_p95_ms": ms(percentile(itl, 95)),
                    **{s: str(statuses.get(s, 0)) for s in STATUSES},
                }
            )
        return rows
