"""Client against server: each step's figures from the records, set against the servers' own metrics over the
step's window, read from Prometheus after the sweep; saved as `reconcile.jsonl` so the report renders it without
Prometheus.

A step's window runs from its first request sent to its last one finished (records). Counters are read as raw
samples, not with `increase()`, which extrapolates to the window's edges and gives fractional counts: the server's
figure is the last sample before the window subtracted from the first sample at or after its end (summed over
series, e.g. vLLM's per finished_reason). The window is *isolated* when those two samples fall between the previous
and the next step on the same server; otherwise the other step's requests could be counted, and a gap is not
flagged. Unrecorded requests (the sweep's warm-ups before each token cap) cannot be told apart: a sample taken
after them counts them.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from llm_loadtest import jsonl
from llm_loadtest.records import OWN_REQUESTS_FILE, RequestRecord, Status, StepKey, read_records, step_key

RECONCILE_FILE = "reconcile.jsonl"
COUNT_TOLERANCE = 0.0  # requests and tokens are counted on both sides: they must agree exactly
TIME_TOLERANCE = 0.10  # the client's clock adds the network and HTTP parsing to the server's
TIME_SLACK_S = 0.02  # ... a few milliseconds, which is more than 10 % of a very short request

Samples = dict[str, list[tuple[float, float]]]  # series labels -> (timestamp, value), oldest first


class ReconcileError(RuntimeError):
    pass


class TargetMissing(ReconcileError):
    """Prometheus holds nothing to set one target against (not scraped, under another label, or under neither
    TGI's nor vLLM's names): that target is not reconciled, the others still are."""


def _ok_tokens(rs: Sequence[RequestRecord]) -> float:
    return float(sum(r.output_tokens for r in rs if r.ok))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class Figure:
    """One figure on both sides: the client's from the records, the server's as the increase of `series` over the
    window (divided by that of `per` for a mean)."""

    name: str
    series: str  # a selector without the server label, e.g. 'vllm:request_success_total{finished_reason="stop"}'
    client: Callable[[Sequence[RequestRecord]], float | None]
    tolerance: float
    per: str | None = None
    slack: float = 0.0  # a difference this small is never flagged, whatever its share


def arrived(rs: Sequence[RequestRecord]) -> float:
    """Requests that reached the server: all but connection errors without an HTTP answer (refused connections);
    the server counts every other one on arrival, 429s included."""
    return float(sum(r.sent and not (r.status == Status.CONNECTION_ERROR and r.http_status is None) for r in rs))


TGI = (
    Figure("requests", "tgi_request_count", arrived, COUNT_TOLERANCE),
    Figure("ok", "tgi_request_success", lambda rs: float(sum(r.ok for r in rs)), COUNT_TOLERANCE),
    Figure("output_tokens", "tgi_request_generated_tokens_sum", _ok_tokens, COUNT_TOLERANCE),
    Figure(
        "e2e_mean_s",
        "tgi_request_duration_sum",
        lambda rs: _mean([r.e2e_s for r in rs if r.ok]),
        TIME_TOLERANCE,
        per="tgi_request_duration_count",
        slack=TIME_SLACK_S,
    ),
)
VLLM = (
    Figure(
        "ok",
        'vllm:request_success_total{finished_reason!~"abort|error"}',
        lambda rs: float(sum(r.ok for r in rs)),
        COUNT_TOLERANCE,
    ),
    Figure("output_tokens", "vllm:generation_tokens_total", _ok_tokens, COUNT_TOLERANCE),
    Figure(
        "e2e_mean_s",
        "vllm:e2e_request_latency_seconds_sum",
        lambda rs: _mean([r.e2e_s for r in rs if r.ok]),
        TIME_TOLERANCE,
        per="vllm:e2e_request_latency_seconds_count",
        slack=TIME_SLACK_S,
    ),
    Figure(
        "ttft_mean_s",
        "vllm:time_to_first_token_seconds_sum",
        lambda rs: _mean([r.ttft_s for r in rs if r.ok and r.ttft_s is not None]),
        TIME_TOLERANCE,
        per="vllm:time_to_first_token_seconds_count",
        slack=TIME_SLACK_S,
    ),
)


@dataclass(frozen=True)
class Comparison:
    """One figure of one step, as the client and the server saw it."""

    target: str
    users: int
    max_new_tokens: int
    figure: str
    client: float | None
    server: float | None  # None: the server exports no such series, or had not been scraped past the window
    gap: float | None  # (server - client) / client
    tolerance: float  # the largest |gap| that is not flagged
    slack: float  # nor is a difference of at most this (seconds, for times)
    isolated: bool
    flagged: bool  # an isolated window whose gap exceeds the tolerance
    series: str
    start: float
    end: float
    own_requests: int = 0  # the sweep's warm-ups and probes between the bounding scrapes, taken off the server's
    rate: float | None = None  # an open-loop step's request rate (users 0)
    missing: str | None = None  # why this target was not reconciled (its steps' one row each); None: it was


@dataclass(frozen=True)
class StepWindow:
    target: str
    users: int
    max_new_tokens: int
    start: float
    end: float
    records: list[RequestRecord]
    rate: float | None = None


def step_windows(records: Sequence[RequestRecord]) -> list[StepWindow]:
    """Per step, in the order the steps ran: first request sent to last one finished."""
    by: dict[StepKey, list[RequestRecord]] = {}
    for r in records:
        by.setdefault(step_key(r), []).append(r)
    windows = [
        StepWindow(t, u, m, min(r.start for r in rs), max(r.start + r.e2e_s for r in rs), rs, rate)
        for (t, u, m, rate), rs in by.items()
    ]
    return sorted(windows, key=lambda w: w.start)


class Prometheus:
    """The few HTTP API calls reconciliation needs."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def query(self, expr: str, at: float) -> list[dict]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=self.timeout) as response:
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise ReconcileError(f"Prometheus at {self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise ReconcileError(f"Prometheus refused {expr!r}: {body.get('error')}")
        return body["data"]["result"]

    def samples(self, selector: str, since: float, at: float) -> Samples:
        """Every raw sample of the selector's series from `since` to `at`."""
        result = self.query(f"{selector}[{max(1, int(at - since) + 1)}s]", at)
        return {json.dumps(r["metric"], sort_keys=True): [(float(t), float(v)) for t, v in r["values"]] for r in result}

    def wait_scraped(self, server: str, after: float, timeout: float = 30.0) -> None:
        """Until Prometheus has scraped `server` after `after`: its samples reach past a step's end, or (after=0)
        it has been scraped at all (Prometheus applies new scrape targets up to 5 s after it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(f'timestamp(up{{server="{server}"}})', time.time())
            if result and float(result[0]["value"][1]) >= after:
                return
            if time.monotonic() > deadline:
                raise TargetMissing(f"Prometheus did not scrape {server} within {timeout:g}s of the sweep's end")
            time.sleep(0.25)


def _with_server(selector: str, server: str) -> str:
    name, brace, matchers = selector.partition("{")
    label = f'server="{server}"'
    return f"{name}{{{label},{matchers}" if brace else f"{name}{{{label}}}"


def increase(samples: Samples, start: float, end: float) -> float | None:
    """The counters' growth from their last sample before `start` to their first at or after `end`, summed over
    series (one without a sample before `start` began inside the window: from 0); None without a sample past `end`
    or after a counter reset."""
    if not samples:
        return None
    total = 0.0
    for points in samples.values():
        before = [v for t, v in points if t < start]
        after = [v for t, v in points if t >= end]
        if not after or after[0] < (before[-1] if before else 0.0):
            return None
        total += after[0] - (before[-1] if before else 0.0)
    return total


def isolated(scrapes: Sequence[float], w: StepWindow, prev_end: float | None, next_start: float | None) -> bool:
    """Whether the server was scraped between the previous step's end and this one's start, and between this
    one's end and the next one's start: only then do the counters' samples hold this step alone."""
    before = [t for t in scrapes if t < w.start]
    after = [t for t in scrapes if t >= w.end]
    return (
        bool(before)
        and bool(after)
        and (prev_end is None or before[-1] > prev_end)
        and (next_start is None or after[0] < next_start)
    )


def _at(samples: Samples, t: float) -> float:
    """The counters' value as scraped at `t`, summed over series."""
    return sum(next((v for ts, v in reversed(points) if ts <= t), 0.0) for points in samples.values())


def quiet_edges(scrapes: Sequence[float], w: StepWindow, arrived: Samples, ended: Sequence[Samples]) -> bool:
    """Whether as many requests were in flight (arrived, not yet ended) at the scrape after the window as at the one
    before it. A request that no record holds (the sweep's warm-up for the next token cap, sent as this step ends)
    in flight at either edge breaks that."""
    before = [t for t in scrapes if t < w.start]
    after = [t for t in scrapes if t >= w.end]
    if not before or not after:
        return False

    def in_flight(t: float) -> float:
        return _at(arrived, t) - sum(_at(s, t) for s in ended)

    return in_flight(before[-1]) == in_flight(after[0])


def own_between(
    own: Sequence[RequestRecord], target: str, scrapes: Sequence[float], w: StepWindow
) -> list[RequestRecord]:
    """The sweep's own requests to `target` wholly between the scrapes that bound the window: the server's
    counters hold them beside the step's (one in flight at a bounding scrape breaks its quiet edges instead)."""
    before = [t for t in scrapes if t < w.start]
    after = [t for t in scrapes if t >= w.end]
    if not before or not after:
        return []
    return [r for r in own if r.target == target and before[-1] < r.start and r.start + r.e2e_s <= after[0]]


def less_own(figure: Figure, num: float | None, den: float | None, own: Sequence[RequestRecord]) -> tuple:
    """The server's increase without the sweep's own requests: counts less theirs; a mean's sum and count less
    theirs (their client-side times stand in for the server's, a few ms apart)."""
    if not own or num is None:
        return num, den
    mine = figure.client(own)
    if figure.per is None:
        return num - (mine or 0.0), den
    n = sum(r.ok for r in own)
    if mine is None or den is None or not n:
        return num, den
    return num - mine * n, den - n


def compare(
    w: StepWindow, figure: Figure, num: float | None, den: float | None, alone: bool, own_requests: int = 0
) -> Comparison:
    client = figure.client(w.records)
    server = num if figure.per is None else (None if num is None or not den else num / den)
    gap = None
    if client is not None and server is not None:
        gap = (server - client) / client if client else (0.0 if server == 0 else None)
    flagged = (
        alone
        and client is not None
        and server is not None
        and abs(server - client) > figure.slack
        and (gap is None or abs(gap) > figure.tolerance)
    )
    return Comparison(
        w.target,
        w.users,
        w.max_new_tokens,
        figure.name,
        client,
        server,
        gap,
        figure.tolerance,
        figure.slack,
        alone,
        flagged,
        figure.series,
        w.start,
        w.end,
        own_requests,
        w.rate,
    )


def reconcile(
    prometheus: Prometheus,
    records: Sequence[RequestRecord],
    timeout: float = 30.0,
    own: Sequence[RequestRecord] = (),
) -> list[Comparison]:
    """Every step's figures against the servers', each target's metrics read as labelled `server=<target name>`
    (local mode's scrape configuration). A target Prometheus holds nothing for gets one row per step saying why;
    Prometheus itself failing (unreachable, refusing a query) stops it all (ReconcileError)."""
    windows = step_windows(records)
    out = []
    for target in dict.fromkeys(w.target for w in windows):
        mine = [w for w in windows if w.target == target]
        try:
            out += _reconcile_target(prometheus, target, mine, timeout, own)
        except TargetMissing as exc:
            out += [_not_reconciled(w, str(exc)) for w in mine]
    return out


def _reconcile_target(
    prometheus: Prometheus, target: str, mine: Sequence[StepWindow], timeout: float, own: Sequence[RequestRecord]
) -> list[Comparison]:
    since, until = mine[0].start - 60, mine[-1].end
    if not prometheus.samples(_with_server("up", target), since, time.time()):  # no use waiting for it
        raise TargetMissing(
            f'Prometheus holds no series labelled server="{target}" (not scraped, or under another label)'
        )
    prometheus.wait_scraped(target, until, timeout)
    at = time.time()
    read = {}  # selector -> samples, read once for the whole sweep
    for selector in {s for f in (*TGI, *VLLM) for s in (f.series, f.per) if s} | {"tgi_request_failure"}:
        read[selector] = prometheus.samples(_with_server(selector, target), since, at)
    scrapes = [t for points in prometheus.samples(_with_server("up", target), since, at).values() for t, _ in points]
    out = []
    for figures in (TGI, VLLM):
        if not read[figures[0].series]:
            continue  # not this server's metric names
        for i, w in enumerate(mine):
            prev_end = mine[i - 1].end if i else None
            next_start = mine[i + 1].start if i + 1 < len(mine) else None
            alone = isolated(scrapes, w, prev_end, next_start)
            if figures is TGI:  # its counters say what is in flight: arrived, not yet succeeded or failed
                ended = (read["tgi_request_success"], read["tgi_request_failure"])
                alone = alone and quiet_edges(scrapes, w, read["tgi_request_count"], ended)
            extra = own_between(own, target, scrapes, w)
            for f in figures:
                num = increase(read[f.series], w.start, w.end)
                den = increase(read[f.per], w.start, w.end) if f.per else None
                num, den = less_own(f, num, den, extra)
                out.append(compare(w, f, num, den, alone, len(extra)))
    if not out:
        raise TargetMissing(f"{target} is scraped but exports neither TGI's nor vLLM's metric names")
    return out


def _not_reconciled(w: StepWindow, why: str) -> Comparison:
    """A step of a target that was not reconciled: the requests the client saw arrive, nothing to set them against."""
    requests = TGI[0]
    return Comparison(
        w.target,
        w.users,
        w.max_new_tokens,
        requests.name,
        requests.client(w.records),
        None,
        None,
        requests.tolerance,
        requests.slack,
        isolated=False,
        flagged=False,
        series="",
        start=w.start,
        end=w.end,
        rate=w.rate,
        missing=why,
    )


def write_reconcile(directory: Path, comparisons: Sequence[Comparison]) -> None:
    with open(directory / RECONCILE_FILE, "w", encoding="utf-8") as f:
        for c in comparisons:
            f.write(json.dumps(asdict(c)) + "\n")


def read_reconcile(directory: Path) -> tuple[list[Comparison], int]:
    """The comparisons of `reconcile.jsonl`, and how many lines were unreadable (skipped, as every reader does)."""
    return jsonl.read_counted(directory / RECONCILE_FILE, Comparison)


def reconcile_run(prometheus_url: str, directory: Path, timeout: float = 30.0) -> list[Comparison]:
    """After a sweep: reconcile its records with what Prometheus scraped, and save reconcile.jsonl."""
    records, _ = read_records(directory / "requests.jsonl")
    own, _ = read_records(directory / OWN_REQUESTS_FILE)
    comparisons = reconcile(Prometheus(prometheus_url), records, timeout, own)
    write_reconcile(directory, comparisons)
    return comparisons


def reconcile_servers(prometheus: str, out: Path) -> None:
    """The sweep's figures against the servers' own (reconcile.jsonl); a Prometheus that fails only costs that."""
    try:
        comparisons = reconcile_run(prometheus, out)
    except ReconcileError as exc:
        print(f"  reconciliation with the servers skipped: {exc}", flush=True)
        return
    flagged = sorted({f"{c.target} {c.figure}" for c in comparisons if c.flagged})
    missing = {c.target: c.missing for c in comparisons if c.missing}
    print(
        f"  client against server: {sum(c.missing is None for c in comparisons)} figures, {len(flagged)} differing"
        + (f" ({', '.join(flagged)})" if flagged else "")
        + "".join(f"; {target} not reconciled: {why}" for target, why in missing.items()),
        flush=True,
    )


def _cell(c: Comparison) -> str:
    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if c.figure.endswith("_s") else f"{v:g}"

    text = f"{fmt(c.client)} / {fmt(c.server)}"
    if c.missing:
        return f"{text} (not reconciled)"
    if c.flagged:
        gap = "≠" if c.gap is None else f"{c.gap:+.1%}"
        return f"**{text} ({gap})**"
    return text if c.isolated else f"{text} (not isolated)"


def reconcile_markdown(directory: Path | None) -> list[str]:
    """The report's section: per step, each figure as client / server; flagged gaps in bold."""
    comparisons, bad = read_reconcile(directory) if directory is not None else ([], 0)
    skipped = [f"{bad} unreadable line(s) in reconcile.jsonl were skipped (a run killed mid-write)."] if bad else []
    if not comparisons:
        return ["## Client against server", "", *skipped, ""] if skipped else []
    names = list(dict.fromkeys(c.figure for c in comparisons))
    steps: dict[tuple[str, int, int, float], dict[str, Comparison]] = {}
    for c in comparisons:
        steps.setdefault((c.target, c.max_new_tokens, c.users, c.rate or 0.0), {})[c.figure] = c
    judged = [c for c in comparisons if c.missing is None]
    flagged = [c for c in judged if c.flagged]
    out = [
        "## Client against server",
        "",
        f"Each step's figures from the records against the server's own metrics over the step's window "
        f"(`reconcile.jsonl`): client / server. Counts must agree exactly, mean times within "
        f"{TIME_TOLERANCE:.0%} or {TIME_SLACK_S * 1000:g} ms; a window not isolated from other requests by the "
        f"server's scrapes is not judged. **{len(flagged)} of {len(judged)} figures differ beyond that**"
        + (": " + ", ".join(sorted({f"{c.target} {c.figure}" for c in flagged})) + "." if flagged else "."),
        "",
        "| target | max_new_tokens | load | " + " | ".join(names) + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for (target, cap, users, rate), by in sorted(steps.items()):
        cells = [_cell(by[n]) if n in by else "-" for n in names]
        load = f"{rate:g} requests/s" if rate else str(users)
        out.append(f"| {target} | {cap} | {load} | " + " | ".join(cells) + " |")
    missing = {c.target: c.missing for c in comparisons if c.missing}
    if missing:
        out += ["", "Not reconciled: " + "; ".join(f"{target} ({why})" for target, why in missing.items()) + "."]
    if skipped:
        out += ["", *skipped]
    return [*out, ""]
