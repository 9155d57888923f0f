"""Every figure the kit reports, defined once, computed from raw request records (numpy percentiles, never
Locust's rounded ones).

- TTFT (time to first token): from sending the request to the arrival of the first token event.
- ITL (inter-token latency) of a request: the mean gap after the first token, (e2e - TTFT) / (n - 1), n ≥ 2.
- e2e latency: from sending the request to the end of its response.
- Output tokens: tokens received in the stream (one per TGI token event; per OpenAI chunk, the growth of the
  server's running usage count where it sends one, as vLLM merges tokens into a chunk when it lags). TGI cannot be
  forced past EOS, so the cap is never assumed; a difference with what the server reports at the end is counted in
  `token_mismatches`.
- Output tok/s (aggregate): output tokens of the step's OK requests that arrived inside its measurement window ÷ the
  window's length. The window runs from the moment every user has a request in flight to the moment the drain
  begins (the in-flight level last falls from that height): the ramp and the drain are left out.
- Output tok/s per user: the mean over OK requests of output_tokens / e2e (what one user sees).
- Requests/s: requests that finished (any status) ÷ wall time.
- Error rate: requests that failed (any status but ok and cancelled) ÷ all requests but cancelled ones.
  `cancelled` marks requests the load tester itself stopped (a step's hard stop, Ctrl-C): counted, not blamed.
- Goodput: OK requests meeting the SLO (TTFT ≤ slo_ttft_s and ITL ≤ slo_itl_s) ÷ wall time.
- Requested against received output tokens: each record keeps the cap it asked for (`requested_tokens`) beside
  the tokens received; `ended_early` counts OK requests that received fewer (EOS, a stop sequence). Requests sent
  with `ignore_eos` (openai dialects) run to their cap; TGI's API cannot ask it, so its answers may be shorter and
  engines are compared on tokens received.
- Achieved concurrency: the sum of e2e of all requests ÷ wall time (Little's law); peak concurrency: the most
  requests in flight at one moment. A peak below the users asked for, or (when users sent several requests each)
  a mean below it, means the load generator could not keep the concurrency.

Open loop (a step at a request rate, records with a `due` time):
- Send lag: sent − due, per request; p50, p99 and max per step. Late: requests sent more than LATE_AFTER_S after
  their due time. Not sent: arrivals recorded as `not_sent` (the in-flight bound reached, or the step ended first).
- TTFT and e2e from due: the send lag plus TTFT or e2e — what a user arriving at the due time saw.
- Scheduled rate: (arrivals − 1) ÷ (last due − first due), every arrival, sent or not; achieved rate: (sent − 1) ÷
  (last send − first send). The scheduled rate differs from the target by the arrival process's own noise (Poisson:
  a relative sd of 1/sqrt(N) over N arrivals); the achieved rate against the scheduled one is the generator's error.
- Throughput's window: from the first due time to the last.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llm_loadtest import intervals
from llm_loadtest.records import RequestRecord, Status

STATUSES = [s.value for s in Status if s != Status.NOT_SENT]  # what a sent request can end with
LATE_AFTER_S = 0.010  # an open-loop request sent later than this after its due time is late
LATE_SHARE = 0.01  # a step with more late requests than this share describes the generator, not the server
SLICES = 10  # a step's window is cut into this many slices: the samples of its throughput's interval and dispersion


@dataclass(frozen=True)
class SLO:
    ttft_s: float = 2.0
    itl_s: float = 0.1

    def met_by(self, r: RequestRecord) -> bool:
        return r.ok and r.ttft_s is not None and r.ttft_s <= self.ttft_s and (r.itl_s is None or r.itl_s <= self.itl_s)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


@dataclass
class StepSummary:
    target: str
    api: str
    users: int
    max_new_tokens: int
    wall_s: float
    requests: int
    ok: int
    output_tokens: int
    output_tok_s: float
    tok_s_per_user: float | None
    requests_per_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    itl_p50_s: float | None
    itl_p95_s: float | None
    itl_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    e2e_p99_s: float | None
    errors: dict[str, int]
    error_rate: float
    goodput: float
    token_mismatches: int
    achieved_concurrency: float
    peak_concurrency: int
    window_s: float = 0.0  # the measurement window: every user in flight, before the drain
    tok_s_cv: float | None = None  # coefficient of variation of the window's per-slice throughput
    output_tok_s_ci_low: float | None = None
    output_tok_s_ci_high: float | None = None
    ttft_p50_ci_low: float | None = None
    ttft_p50_ci_high: float | None = None
    ttft_p95_ci_low: float | None = None
    ttft_p95_ci_high: float | None = None
    ttft_p99_ci_low: float | None = None
    ttft_p99_ci_high: float | None = None
    itl_p50_ci_low: float | None = None
    itl_p50_ci_high: float | None = None
    itl_p95_ci_low: float | None = None
    itl_p95_ci_high: float | None = None
    itl_p99_ci_low: float | None = None
    itl_p99_ci_high: float | None = None
    e2e_p50_ci_low: float | None = None
    e2e_p50_ci_high: float | None = None
    e2e_p95_ci_low: float | None = None
    e2e_p95_ci_high: float | None = None
    e2e_p99_ci_low: float | None = None
    e2e_p99_ci_high: float | None = None
    loadgen_cpu: float | None = None
    others_cpu: float | None = None  # cores taken by processes outside the kit and its targets (trust.py)
    loadgen_bottleneck: bool = False
    refused: int = 0  # turned away before any token (users pause after each: fewer requests in flight)
    complete: bool = True
    disturbances: list[str] = field(default_factory=list)  # why the step's conditions were not those of the run
    notes: list[str] = field(default_factory=list)
    requested_tokens: int = 0  # output tokens the OK requests asked for (their caps, summed)
    ended_early: int = 0  # OK requests that received fewer tokens than they asked for
    input_tokens_mean: float | None = None  # prompts' mean length in --tokenizer tokens, where measured
    ignore_eos: bool = False  # every request of the step was sent with ignore_eos
    # Open loop (null or 0 in closed loop): the step's arrival rate, what was scheduled and sent, and latency as
    # an arriving user saw it.
    rate: float | None = None
    scheduled_rate: float | None = None
    achieved_rate: float | None = None
    not_sent: int = 0
    late: int = 0
    send_lag_p50_s: float | None = None
    send_lag_p99_s: float | None = None
    send_lag_max_s: float | None = None
    ttft_from_due_p50_s: float | None = None
    ttft_from_due_p95_s: float | None = None
    ttft_from_due_p99_s: float | None = None
    e2e_from_due_p50_s: float | None = None
    e2e_from_due_p95_s: float | None = None
    e2e_from_due_p99_s: float | None = None

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def ci(self, name: str) -> intervals.Interval | None:
        """The interval of a figure by its name without the unit (`ttft_p95`, `output_tok_s`), if it has one."""
        low, high = getattr(self, f"{name}_ci_low"), getattr(self, f"{name}_ci_high")
        return None if low is None or high is None else (low, high)


def token_times(r: RequestRecord) -> np.ndarray:
    """Epoch seconds at which each of a request's tokens arrived: its first token, then every gap. A record
    without its gaps (hand-made, or cut short) has its tokens spread evenly from the first to the end."""
    if r.ttft_s is None or r.output_tokens == 0:
        return np.empty(0)
    first = r.start + r.ttft_s
    if len(r.gaps_s) == r.output_tokens - 1:
        return first + np.concatenate(([0.0], np.cumsum(r.gaps_s)))
    return np.linspace(first, r.start + r.e2e_s, r.output_tokens)


def measurement_window(records: Sequence[RequestRecord], users: int) -> tuple[float, float] | None:
    """From the moment the in-flight level first reaches the step's plateau to the moment it last falls from it:
    the ramp before, the drain after are left out. The plateau is the level held longest (ties: the highest), at
    most the users asked for: a refusal that lasts a millisecond does not make one. None without records.
    Open loop has no plateau to wait for: its window runs from the first due time to the last."""
    dues = [r.due for r in records if r.due is not None]
    if dues:
        return (min(dues), max(dues)) if max(dues) > min(dues) else None
    records = [r for r in records if r.sent]
    if not records:
        return None
    edges = sorted([(r.start, 1) for r in records] + [(r.start + r.e2e_s, -1) for r in records])
    held: dict[int, float] = {}
    level = 0
    for (t, step), (t_next, _) in itertools.pairwise(edges):
        level += step
        held[level] = held.get(level, 0.0) + t_next - t
    height = max((v, lv) for lv, v in held.items() if lv > 0 and (lv <= users or not users))[1] if held else 1
    level, begin, end = 0, None, None
    for t, step in edges:
        before = level
        level += step
        if begin is None and level >= height:
            begin = t
        if before >= height > level:
            end = t
    if begin is None or end is None or end <= begin:
        return None
    return begin, end


def slice_rates(records: Sequence[RequestRecord], window: tuple[float, float] | None) -> list[float]:
    """Output tok/s of the OK requests in each of SLICES equal slices of the window: their mean is the step's
    output tok/s; their spread, its interval and dispersion."""
    if window is None:
        return []
    begin, end = window
    times = [token_times(r) for r in records if r.ok]
    arrivals = np.concatenate(times) if times else np.empty(0)
    counts, _ = np.histogram(arrivals, bins=SLICES, range=(begin, end))
    return list(counts / ((end - begin) / SLICES))


def summarize(
    records: Sequence[RequestRecord],
    *,
    target: str,
    api: str,
    users: int,
    max_new_tokens: int,
    wall_s: float,
    slo: SLO = SLO(),
    loadgen_cpu: float | None = None,
    live: bool = False,
    rate: float | None = None,
) -> StepSummary:
    """`live`: recent requests of a sliding window, not a step: throughput over `wall_s`, no intervals (their
    resampling would take the Locust master's CPU). `rate`: an open-loop step's arrival rate."""
    arrivals = records
    records = [r for r in arrivals if r.sent]
    ok = [r for r in records if r.ok]
    statuses = Counter(r.status for r in records)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    itl = [r.itl_s for r in ok if r.itl_s is not None]
    e2e = [r.e2e_s for r in ok]
    tokens = sum(r.output_tokens for r in ok)
    per_user = [r.output_tokens / r.e2e_s for r in ok if r.e2e_s > 0]
    wall = max(wall_s, 1e-9)
    window = None if live else measurement_window(arrivals, users)
    rates = slice_rates(records, window)
    tok_s = float(np.mean(rates)) if rates else tokens / wall
    concurrency = sum(r.e2e_s for r in records) / wall
    summary = StepSummary(
        target=target,
        api=api,
        users=users,
        max_new_tokens=max_new_tokens,
        wall_s=wall_s,
        requests=len(records),
        ok=len(ok),
        output_tokens=tokens,
        output_tok_s=tok_s,
        tok_s_per_user=float(np.mean(per_user)) if per_user else None,
        requests_per_s=len(records) / wall,
        ttft_p50_s=percentile(ttft, 50),
        ttft_p95_s=percentile(ttft, 95),
        ttft_p99_s=percentile(ttft, 99),
        itl_p50_s=percentile(itl, 50),
        itl_p95_s=percentile(itl, 95),
        itl_p99_s=percentile(itl, 99),
        e2e_p50_s=percentile(e2e, 50),
        e2e_p95_s=percentile(e2e, 95),
        e2e_p99_s=percentile(e2e, 99),
        errors={s: statuses.get(s, 0) for s in STATUSES if s != Status.OK},
        error_rate=error_rate(records),
        goodput=sum(1 for r in ok if slo.met_by(r)) / wall,
        token_mismatches=sum(1 for r in records if r.token_mismatch),
        achieved_concurrency=concurrency,
        peak_concurrency=peak_in_flight(records),
        loadgen_cpu=loadgen_cpu,
        refused=sum(1 for r in records if r.refused),
        window_s=window[1] - window[0] if window else 0.0,
        tok_s_cv=float(np.std(rates) / np.mean(rates)) if rates and np.mean(rates) > 0 else None,
    )
    summary.requested_tokens = sum(requested(r) for r in ok)
    summary.ended_early = sum(1 for r in ok if r.output_tokens < requested(r))
    inputs = [r.input_tokens for r in records if r.input_tokens is not None]
    summary.input_tokens_mean = float(np.mean(inputs)) if inputs else None
    summary.ignore_eos = bool(records) and all(r.ignore_eos for r in records)
    if rate is not None:
        open_loop_figures(summary, arrivals, rate)
    flag_loadgen(summary)
    if live:
        return summary
    summary.output_tok_s_ci_low, summary.output_tok_s_ci_high = intervals.mean_ci(rates) or (None, None)
    for name, values in (("ttft", ttft), ("itl", itl), ("e2e", e2e)):
        for q in (50, 95, 99):
            ci = intervals.percentile_ci(values, q) or (None, None)
            setattr(summary, f"{name}_p{q}_ci_low", ci[0])
            setattr(summary, f"{name}_p{q}_ci_high", ci[1])
    return summary


def requested(r: RequestRecord) -> int:
    """The cap a request asked for; records written before `requested_tokens` asked for the step's."""
    return r.requested_tokens if r.requested_tokens is not None else r.max_new_tokens


def _rate(times: Sequence[float]) -> float | None:
    """Events per second over their own span: (n − 1) ÷ (last − first), exact for evenly spaced ones."""
    return (len(times) - 1) / (max(times) - min(times)) if len(times) >= 2 and max(times) > min(times) else None


def open_loop_figures(s: StepSummary, arrivals: Sequence[RequestRecord], rate: float) -> None:
    """An open-loop step's figures: rates, send lag, late and not-sent arrivals, latency from the due time."""
    sent = [r for r in arrivals if r.sent]
    lags = [r.send_lag_s for r in sent if r.send_lag_s is not None]
    s.rate = rate
    s.scheduled_rate = _rate([r.due for r in arrivals if r.due is not None])
    s.achieved_rate = _rate([r.start for r in sent])
    s.not_sent = len(arrivals) - len(sent)
    s.late = sum(1 for lag in lags if lag > LATE_AFTER_S)
    s.send_lag_p50_s, s.send_lag_p99_s = percentile(lags, 50), percentile(lags, 99)
    s.send_lag_max_s = max(lags) if lags else None
    ok = [r for r in sent if r.ok]
    ttft = [r.ttft_from_due_s for r in ok if r.ttft_from_due_s is not None]
    e2e = [r.e2e_from_due_s for r in ok if r.e2e_from_due_s is not None]
    for q in (50, 95, 99):
        setattr(s, f"ttft_from_due_p{q}_s", percentile(ttft, q))
        setattr(s, f"e2e_from_due_p{q}_s", percentile(e2e, q))


def error_rate(records: Sequence[RequestRecord]) -> float:
    judged = [r for r in records if r.status not in (Status.CANCELLED, Status.NOT_SENT)]
    return sum(1 for r in judged if not r.ok) / len(judged) if judged else 0.0


def peak_in_flight(records: Sequence[RequestRecord]) -> int:
    records = [r for r in records if r.sent]
    edges = sorted(
        [(r.start, 1) for r in records] + [(r.start + r.e2e_s, -1) for r in records], key=lambda e: (e[0], e[1])
    )
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def flag_loadgen(s: StepSummary, cpu_limit: float = 0.9, concurrency_floor: float = 0.8) -> None:
    """Mark a step whose numbers describe the load generator, not the server."""
    if s.loadgen_cpu is not None and s.loadgen_cpu >= cpu_limit:
        s.loadgen_bottleneck = True
        s.notes.append(f"load generator CPU at {s.loadgen_cpu:.0%} of a core per process")
    if s.late > LATE_SHARE * max(1, s.requests):
        s.loadgen_bottleneck = True
        s.notes.append(f"{s.late} of {s.requests} requests sent more than {LATE_AFTER_S * 1000:g} ms after due")
    if s.not_sent:
        s.notes.append(f"{s.not_sent} arrivals not sent")
    if not (s.users and s.requests):
        return
    if s.refused:  # users that were turned away pause before retrying: the server, not the generator, set the level
        s.notes.append(f"{s.refused} requests refused before their first token")
        return
    floor = concurrency_floor * s.users
    if s.peak_concurrency < floor or (s.requests > s.users and s.achieved_concurrency < floor):
        s.loadgen_bottleneck = True
        s.notes.append(
            f"held {s.achieved_concurrency:.1f} (peak {s.peak_concurrency}) of {s.users} concurrent requests"
        )
