"""Capacity: the highest concurrency, and the highest open-loop request rate, at which a target still meets its
SLO, per target and token cap.

Two ways to the same figures: from a sweep's own steps (`capacity_from_steps`, the report's table, no extra load),
or by searching for them (capacity_search.py), which saves `capacity.json`. Either way a step is judged by
`misses`, the one place the SLO decision is made; an open-loop step is judged on TTFT from the due time (what an
arriving user saw), and misses it when any arrival went unsent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llm_loadtest.metrics import SLO, StepSummary

CAPACITY_FILE = "capacity.json"


@dataclass(frozen=True)
class CapacitySLO:
    """What a step must meet for its concurrency to count as sustained."""

    ttft_p95_s: float = 2.0
    itl_p95_s: float = 0.1
    max_error_rate: float = 0.01

    @classmethod
    def from_slo(cls, slo: SLO, max_error_rate: float = 0.01) -> CapacitySLO:
        """The run's goodput thresholds, applied to the step's p95s."""
        return cls(slo.ttft_s, slo.itl_s, max_error_rate)

    def describe(self) -> str:
        return (
            f"TTFT p95 ≤ {self.ttft_p95_s:g} s, ITL p95 ≤ {self.itl_p95_s * 1000:g} ms, "
            f"errors ≤ {self.max_error_rate:.0%}"
        )


def misses(s: StepSummary, slo: CapacitySLO) -> list[str]:
    """Why a step misses the SLO, in words; empty when it holds. Decided on the step's point estimates; where a
    confidence interval exists, its far end is what should be compared here."""
    out = []
    ttft, name = (s.ttft_from_due_p95_s, "TTFT p95 from due") if s.open_loop else (s.ttft_p95_s, "TTFT p95")
    if ttft is None:
        out.append("no successful request")
    elif ttft > slo.ttft_p95_s:
        out.append(f"{name} {ttft:.3f} s > {slo.ttft_p95_s:g} s")
    if s.itl_p95_s is not None and s.itl_p95_s > slo.itl_p95_s:  # one-token answers have no ITL
        out.append(f"ITL p95 {s.itl_p95_s * 1000:.1f} ms > {slo.itl_p95_s * 1000:g} ms")
    if s.error_rate > slo.max_error_rate:
        out.append(f"error rate {s.error_rate:.1%} > {slo.max_error_rate:.1%}")
    if s.not_sent:
        out.append(f"{s.not_sent} arrivals not sent")
    if not s.complete:
        out.append("incomplete step")
    return out


@dataclass(frozen=True)
class Probe:
    """One step's figures and the SLO's verdict on them."""

    users: int
    requests: int
    ttft_p95_s: float | None  # open loop: from the due time
    itl_p95_s: float | None
    error_rate: float
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed
    loadgen_bottleneck: bool = False  # the figures may describe the load generator
    rate: float | None = None  # an open-loop probe's request rate (users 0)

    @classmethod
    def of(cls, s: StepSummary, slo: CapacitySLO) -> Probe:
        reasons = misses(s, slo)
        ttft = s.ttft_from_due_p95_s if s.open_loop else s.ttft_p95_s
        return cls(
            s.users, s.requests, ttft, s.itl_p95_s, s.error_rate, not reasons, reasons, s.loadgen_bottleneck, s.rate
        )


@dataclass
class TargetCapacity:
    """A target's capacity at one token cap, and the steps it was read from."""

    target: str
    api: str
    max_new_tokens: int
    capacity_users: int  # 0: the SLO failed at the fewest users tried
    at_max_users: bool  # the SLO held at the most users tried: the capacity is at least capacity_users
    capacity_rate: float | None = None  # the highest open-loop rate tried that met the SLO (null: none tried)
    probes: list[Probe] = field(default_factory=list)
    rate_at_max: bool = False  # the SLO held at the highest rate tried: the capacity is at least capacity_rate


def highest_passing(probes: Sequence[Probe], level: Callable[[Probe], float]) -> tuple[float, bool]:
    """The highest level of the run of passes from the lowest up (a pass above a failure is taken for noise, not
    capacity), and whether every probe passed."""
    held = 0.0
    ordered = sorted(probes, key=level)
    for p in ordered:
        if not p.passed:
            break
        held = level(p)
    return held, all(p.passed for p in ordered)


def capacity_from_steps(summaries: Sequence[StepSummary], slo: CapacitySLO) -> list[TargetCapacity]:
    """Per target and token cap, in the order they ran: the most users, and the highest open-loop rate, of the run
    of steps from the lowest up that all met the SLO."""
    series: dict[tuple[str, int], list[StepSummary]] = {}
    for s in summaries:
        series.setdefault((s.target, s.max_new_tokens), []).append(s)
    out = []
    for (target, cap), steps in series.items():
        probes = [Probe.of(s, slo) for s in steps]
        closed = [p for p in probes if p.rate is None]
        opened = [p for p in probes if p.rate is not None]
        users, at_max = highest_passing(closed, lambda p: p.users)
        found = TargetCapacity(target, steps[0].api, cap, int(users), bool(closed) and at_max, probes=probes)
        if opened:
            found.capacity_rate, found.rate_at_max = highest_passing(opened, lambda p: p.rate or 0.0)
        out.append(found)
    return out


@dataclass
class CapacitySearch:
    """`capacity.json`: what `llm-loadtest capacity` found."""

    slo: CapacitySLO
    max_users: int
    targets: list[TargetCapacity]

    def write(self, directory: Path) -> None:
        (directory / CAPACITY_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, directory: Path) -> CapacitySearch | None:
        path = directory / CAPACITY_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        targets = [
            TargetCapacity(**{**t, "probes": [Probe(**p) for p in t["probes"]]}) for t in data.get("targets", [])
        ]
        return cls(CapacitySLO(**data["slo"]), data["max_users"], targets)


@dataclass(frozen=True)
class Measure:
    """How a capacity table reads a TargetCapacity: by users (closed loop) or by request rate (open loop)."""

    title: str
    value: Callable[[TargetCapacity], float | None]
    at_max: Callable[[TargetCapacity], bool]

    def label(self, c: TargetCapacity) -> str:
        v = self.value(c)
        return "-" if v is None else f"{'≥ ' if self.at_max(c) else ''}{v:g}"

    def ratio(self, b: TargetCapacity, a: TargetCapacity) -> str:
        """b's capacity over a's; ≥ or ≤ where one of them is only a lower bound."""
        vb, va = self.value(b), self.value(a)
        if vb is None or not va or (self.at_max(a) and self.at_max(b)):
            return "-"
        bound = "≥ " if self.at_max(b) else "≤ " if self.at_max(a) else ""
        return f"{bound}{vb / va:.2f}×"


USERS = Measure(
    "users", lambda c: c.capacity_users if any(p.rate is None for p in c.probes) else None, lambda c: c.at_max_users
)
RATE = Measure("requests/s", lambda c: c.capacity_rate, lambda c: c.rate_at_max)


def capacity_table(capacities: Sequence[TargetCapacity], measure: Measure = USERS) -> list[str]:
    """One row per token cap: each target's capacity, and each other target's over the first's."""
    targets = list(dict.fromkeys(c.target for c in capacities))
    by = {(c.target, c.max_new_tokens): c for c in capacities}
    base, others = targets[0], targets[1:]
    out = [
        "| max_new_tokens | " + " | ".join(targets) + "".join(f" | {o} / {base}" for o in others) + " |",
        "|---" * (1 + len(targets) + len(others)) + "|",
    ]
    for cap in sorted({c.max_new_tokens for c in capacities}):
        cells = [measure.label(by[(t, cap)]) if (t, cap) in by else "-" for t in targets]
        for o in others:
            pair = by.get((o, cap)), by.get((base, cap))
            cells.append(measure.ratio(pair[0], pair[1]) if pair[0] and pair[1] else "-")
        out.append(f"| {cap} | " + " | ".join(cells) + " |")
    return out


def capacity_tables(capacities: Sequence[TargetCapacity]) -> list[str]:
    """By users where closed-loop steps were judged, and by request rate where open-loop ones were."""
    out = []
    for measure in (USERS, RATE):
        if any(measure.value(c) is not None for c in capacities):
            if measure is RATE:
                out += ["In requests/s under open-loop load, judged on TTFT from the due time, no arrival unsent:", ""]
            out += [*capacity_table(capacities, measure), ""]
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def capacity_markdown(summaries: Sequence[StepSummary], slo: SLO, directory: Path | None) -> list[str]:
    """The report's capacity section: the search's answer where `capacity.json` exists, else the sweep's steps."""
    searched = CapacitySearch.read(directory) if directory is not None else None
    if searched is not None and searched.targets:
        out = [
            "## Capacity",
            "",
            f"Searched by `llm-loadtest capacity` (`capacity.json`): the most concurrent requests at which "
            f"{searched.slo.describe()}, found by doubling the users from 1 and then bisecting, up to "
            f"{searched.max_users}; ≥: the SLO still held there.",
            "",
            *capacity_tables(searched.targets),
            "| target | max_new_tokens | load | requests | TTFT p95 (ms) | ITL p95 (ms) | errors | SLO |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in searched.targets:
            for p in t.probes:  # in the order they ran
                verdict = "holds" if p.passed else "misses: " + "; ".join(p.reasons)
                load = f"{p.users} users" if p.rate is None else f"{p.rate:g} requests/s"
                out.append(
                    f"| {t.target} | {t.max_new_tokens} | {load} | {p.requests} | {_ms(p.ttft_p95_s)} | "
                    f"{_ms(p.itl_p95_s)} | {p.error_rate:.1%} | {verdict} |"
                )
        return [*out, ""]
    rule = CapacitySLO.from_slo(slo)
    capacities = capacity_from_steps([s for s in summaries if s.requests], rule)
    if not capacities:
        return []
    return [
        "## Capacity",
        "",
        f"From the sweep's steps: the most concurrent requests at which {rule.describe()}, at that step and every "
        "step below it; ≥: the SLO still held at the most users swept. The ratio is the article's question as one "
        "number: how many more users the other target serves within the SLO.",
        "",
        *capacity_tables(capacities),
    ]
