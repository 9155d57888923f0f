"""Capacity: the highest concurrency at which a target still meets its SLO, per target and token cap.

Two ways to the same figure: from a sweep's own steps (`capacity_from_steps`, the report's table, no extra load),
or by searching for it (capacity_search.py), which saves `capacity.json`. Either way a step is judged by `misses`,
the one place the SLO decision is made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    if s.ttft_p95_s is None:
        out.append("no successful request")
    elif s.ttft_p95_s > slo.ttft_p95_s:
        out.append(f"TTFT p95 {s.ttft_p95_s:.3f} s > {slo.ttft_p95_s:g} s")
    if s.itl_p95_s is not None and s.itl_p95_s > slo.itl_p95_s:  # one-token answers have no ITL
        out.append(f"ITL p95 {s.itl_p95_s * 1000:.1f} ms > {slo.itl_p95_s * 1000:g} ms")
    if s.error_rate > slo.max_error_rate:
        out.append(f"error rate {s.error_rate:.1%} > {slo.max_error_rate:.1%}")
    if not s.complete:
        out.append("incomplete step")
    return out


@dataclass(frozen=True)
class Probe:
    """One step's figures and the SLO's verdict on them."""

    users: int
    requests: int
    ttft_p95_s: float | None
    itl_p95_s: float | None
    error_rate: float
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed
    loadgen_bottleneck: bool = False  # the figures may describe the load generator

    @classmethod
    def of(cls, s: StepSummary, slo: CapacitySLO) -> Probe:
        reasons = misses(s, slo)
        return cls(
            s.users, s.requests, s.ttft_p95_s, s.itl_p95_s, s.error_rate, not reasons, reasons, s.loadgen_bottleneck
        )


@dataclass
class TargetCapacity:
    """A target's capacity at one token cap, and the steps it was read from."""

    target: str
    api: str
    max_new_tokens: int
    capacity_users: int  # 0: the SLO failed at the fewest users tried
    at_max_users: bool  # the SLO held at the most users tried: the capacity is at least capacity_users
    capacity_rate: float | None = None  # requests/s under open-loop load: not measured yet (closed loop only)
    probes: list[Probe] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"≥ {self.capacity_users}" if self.at_max_users else str(self.capacity_users)


def capacity_from_steps(summaries: Sequence[StepSummary], slo: CapacitySLO) -> list[TargetCapacity]:
    """Per target and token cap, in the order they ran: the most users of the run of steps, from the fewest users
    up, that all met the SLO (a pass above a failure is taken for noise, not capacity)."""
    series: dict[tuple[str, int], list[StepSummary]] = {}
    for s in summaries:
        series.setdefault((s.target, s.max_new_tokens), []).append(s)
    out = []
    for (target, cap), steps in series.items():
        probes = [Probe.of(s, slo) for s in sorted(steps, key=lambda s: s.users)]
        held = 0
        for p in probes:
            if not p.passed:
                break
            held = p.users
        out.append(TargetCapacity(target, steps[0].api, cap, held, all(p.passed for p in probes), probes=probes))
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


def _ratio(b: TargetCapacity, a: TargetCapacity) -> str:
    """b's capacity over a's; ≥ or ≤ where one of them is only a lower bound."""
    if a.capacity_users == 0 or (a.at_max_users and b.at_max_users):
        return "-"
    bound = "≥ " if b.at_max_users else "≤ " if a.at_max_users else ""
    return f"{bound}{b.capacity_users / a.capacity_users:.2f}×"


def capacity_table(capacities: Sequence[TargetCapacity]) -> list[str]:
    """One row per token cap: each target's capacity, and each other target's over the first's."""
    targets = list(dict.fromkeys(c.target for c in capacities))
    by = {(c.target, c.max_new_tokens): c for c in capacities}
    base, others = targets[0], targets[1:]
    out = [
        "| max_new_tokens | " + " | ".join(targets) + "".join(f" | {o} / {base}" for o in others) + " |",
        "|---" * (1 + len(targets) + len(others)) + "|",
    ]
    for cap in sorted({c.max_new_tokens for c in capacities}):
        cells = [by[(t, cap)].label if (t, cap) in by else "-" for t in targets]
        for o in others:
            pair = by.get((o, cap)), by.get((base, cap))
            cells.append(_ratio(pair[0], pair[1]) if pair[0] and pair[1] else "-")
        out.append(f"| {cap} | " + " | ".join(cells) + " |")
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
            *capacity_table(searched.targets),
            "",
            "| target | max_new_tokens | users | requests | TTFT p95 (ms) | ITL p95 (ms) | errors | SLO |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in searched.targets:
            for p in t.probes:  # in the order they ran
                verdict = "holds" if p.passed else "misses: " + "; ".join(p.reasons)
                out.append(
                    f"| {t.target} | {t.max_new_tokens} | {p.users} | {p.requests} | {_ms(p.ttft_p95_s)} | "
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
        *capacity_table(capacities),
        "",
    ]
