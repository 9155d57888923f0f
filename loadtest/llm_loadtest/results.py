"""A run's saved results, and the one function that derives every figure from them.

A results directory holds the raw inputs and what is derived from them:

| file | written | holds |
| --- | --- | --- |
| `run.json` | at the start | schema version, host, versions, every setting of the run |
| `requests.jsonl` | as each request finishes | one RequestRecord per request (records.py) |
| `steps.jsonl` | as each step ends | StepFacts: what the records cannot say (the load generator's CPU, how it exited) |
| `probes.jsonl` | before, between and after the steps | trust.Probe: the calibration request to each target |
| `summary.json`, `summary.csv` | after each step, by `derive` | one StepSummary per step (metrics.py) |

`report` reads the raw files and derives again, so a report never depends on a summary written by an older run.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_loadtest import intervals, jsonl
from llm_loadtest.metrics import SLO, STATUSES, StepSummary, measurement_window, slice_rates, summarize
from llm_loadtest.records import WORKER_LOST_EXIT, RequestRecord, StepKey, read_records, step_key
from llm_loadtest.trust import Probe, judge, read_probes

# 1: summary.json was a bare list and per-step facts lived only in it; 2: no intervals, probes or trust; 3: no
# open-loop steps (records without `due` and `rate`: closed loop, which version 4 reads the same)
SCHEMA_VERSION = 4
READABLE_SCHEMAS = (3, 4)


@dataclass(frozen=True)
class StepFacts:
    """What the sweep knows of a step that its records cannot say."""

    target: str
    api: str
    users: int
    max_new_tokens: int
    exit_code: int  # Locust's; -1: stopped at the step's deadline
    deadline_s: float
    loadgen_cpu: float | None  # CPU of the Locust processes, a share of one core per process
    others_cpu: float | None = None  # cores taken by processes outside the kit and its targets (trust.py)
    rate: float | None = None  # open loop: the step's arrival rate (users: 0)

    @property
    def key(self) -> StepKey:
        return step_key(self)


def append_facts(path: Path, facts: StepFacts) -> None:
    jsonl.append(path, facts)


def read_facts(path: Path) -> list[StepFacts]:
    return jsonl.read(path, StepFacts)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_facts() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class RunInfo:
    """Written first, so a run's settings and conditions survive whatever happens to it."""

    settings: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    created: float = field(default_factory=time.time)
    host: dict[str, Any] = field(default_factory=host_facts)
    versions: dict[str, str | None] = field(
        default_factory=lambda: {p: _version(p) for p in ("llm-loadtest", "locust", "torch", "transformers")}
    )

    @property
    def slo(self) -> SLO:
        slo = self.settings.get("slo") or {}
        return SLO(**slo) if slo else SLO()

    def write(self, directory: Path) -> None:
        (directory / "run.json").write_text(json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def read(cls, directory: Path) -> RunInfo | None:
        """None for a directory of records alone (the web UI's); an error for another schema version."""
        path = directory / "run.json"
        if not path.exists():
            if (directory / "summary.json").exists():
                raise ValueError(f"{directory}: written by an older llm-loadtest (no run.json); run the sweep again")
            return None
        data = json.loads(path.read_text())
        if data.get("schema_version") not in READABLE_SCHEMAS:
            raise ValueError(
                f"{directory}: results schema {data.get('schema_version')}, this llm-loadtest reads "
                f"{' and '.join(map(str, READABLE_SCHEMAS))}; run the sweep again"
            )
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass(frozen=True)
class Ratio:
    """One figure of a target divided by the base target's at the same step, with its bootstrapped interval."""

    value: float | None
    low: float | None = None
    high: float | None = None

    @property
    def clear(self) -> bool:
        """The interval leaves out 1: a difference the run's samples support."""
        return self.low is not None and self.high is not None and not (self.low <= 1 <= self.high)


@dataclass(frozen=True)
class Speedup:
    target: str
    base: str
    max_new_tokens: int
    users: int
    throughput: Ratio
    ttft_p50: Ratio
    e2e_p50: Ratio


@dataclass
class Results:
    """Every step's figures, derived from the records, the step facts and the probes."""

    summaries: list[StepSummary]
    bad_lines: int = 0
    slo: SLO = field(default_factory=SLO)
    run: RunInfo | None = None
    speedups: list[Speedup] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return not any(s.disturbances for s in self.summaries)

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(s.target for s in self.summaries))

    @property
    def token_caps(self) -> list[int]:
        return sorted({s.max_new_tokens for s in self.summaries})

    @property
    def closed_loop(self) -> list[StepSummary]:
        return [s for s in self.summaries if not s.open_loop]

    @property
    def open_loop(self) -> list[StepSummary]:
        return [s for s in self.summaries if s.open_loop]

    def series(self, target: str, max_new_tokens: int) -> list[StepSummary]:
        """The closed-loop steps of a target and cap, by users."""
        return sorted(
            (s for s in self.closed_loop if s.target == target and s.max_new_tokens == max_new_tokens),
            key=lambda s: s.users,
        )

    def rate_series(self, target: str, max_new_tokens: int) -> list[StepSummary]:
        """The open-loop steps of a target and cap, by rate."""
        return sorted(
            (s for s in self.open_loop if s.target == target and s.max_new_tokens == max_new_tokens),
            key=lambda s: s.rate or 0.0,
        )


def step_wall(records: Sequence[RequestRecord]) -> float:
    """From the first request sent to the last one finished."""
    if not records:
        return 0.0
    return max(r.start + r.e2e_s for r in records) - min(r.start for r in records)


def by_step(records: Sequence[RequestRecord]) -> dict[StepKey, list[RequestRecord]]:
    out: dict[StepKey, list[RequestRecord]] = {}
    for r in records:
        out.setdefault(step_key(r), []).append(r)
    return out


def derive(
    records: Sequence[RequestRecord],
    facts: Sequence[StepFacts] | None,
    slo: SLO | None = None,
    probes: Sequence[Probe] = (),
) -> list[StepSummary]:
    """One StepSummary per step, in the order the steps ran. `facts=None`: records alone (no sweep ran them).
    Steps whose conditions changed get their disturbances (trust.judge)."""
    grouped = by_step(records)
    apis: dict[StepKey, str] = {key: recs[0].api for key, recs in grouped.items()}
    known = {f.key: f for f in facts or []}
    for key, f in known.items():
        apis.setdefault(key, f.api)
    summaries = []
    for key in dict.fromkeys([*known, *grouped]):
        recs = grouped.get(key, [])
        f = known.get(key)
        target, users, cap, rate = key
        s = summarize(
            recs,
            target=target,
            api=apis[key],
            users=users,
            max_new_tokens=cap,
            wall_s=step_wall(recs),
            slo=slo or SLO(),
            loadgen_cpu=f.loadgen_cpu if f else None,
            rate=rate,
        )
        s.others_cpu = f.others_cpu if f else None
        _judge_complete(s, f, expected=facts is not None)
        summaries.append(s)
    judge(summaries[: len(known)], probes)  # the steps a sweep ran, in its order
    return summaries


def speedups(records: Sequence[RequestRecord], summaries: Sequence[StepSummary]) -> list[Speedup]:
    """Each target against the first at the same closed-loop step: throughput (its time slices' rates), TTFT and
    e2e medians; each ratio's interval bootstrapped from the two steps' samples. Open-loop steps are compared in
    their own table (report.py), by latency from the due time."""
    grouped = by_step(records)
    targets = list(dict.fromkeys(s.target for s in summaries))
    steps = {step_key(s): s for s in summaries}
    out = []
    for s in summaries:
        base_key = (targets[0], s.users, s.max_new_tokens, s.rate)
        if len(targets) < 2 or s.target == targets[0] or s.open_loop or base_key not in steps:
            continue
        a = steps[base_key]
        b_recs, a_recs = grouped.get(step_key(s), []), grouped.get(base_key, [])
        b_rates = slice_rates(b_recs, measurement_window(b_recs, s.users))
        a_rates = slice_rates(a_recs, measurement_window(a_recs, a.users))

        def ok(recs: list[RequestRecord], name: str) -> list[float]:
            return [getattr(r, name) for r in recs if r.ok and getattr(r, name) is not None]

        out.append(
            Speedup(
                s.target,
                a.target,
                s.max_new_tokens,
                s.users,
                _ratio(s.output_tok_s, a.output_tok_s, intervals.ratio_ci(b_rates, a_rates, centre="mean")),
                _ratio(s.ttft_p50_s, a.ttft_p50_s, intervals.ratio_ci(ok(b_recs, "ttft_s"), ok(a_recs, "ttft_s"))),
                _ratio(s.e2e_p50_s, a.e2e_p50_s, intervals.ratio_ci(ok(b_recs, "e2e_s"), ok(a_recs, "e2e_s"))),
            )
        )
    return out


def _ratio(b: float | None, a: float | None, ci: intervals.Interval | None) -> Ratio:
    if a in (None, 0) or b is None:
        return Ratio(None)
    return Ratio(b / a, *(ci or (None, None)))


def _judge_complete(s: StepSummary, f: StepFacts | None, expected: bool) -> None:
    if f is None:
        if expected:
            s.complete = False
            s.notes.append("no summary was saved for this step (the sweep stopped during it)")
    elif f.exit_code == -1:
        s.complete = False
        s.notes.append(f"stopped at the step's deadline ({f.deadline_s:.0f}s)")
    elif f.exit_code == WORKER_LOST_EXIT:
        s.complete = False
        s.notes.append("a Locust worker was lost during the step: its requests in flight have no record")
    elif f.exit_code not in (0, 1):  # Locust exits 1 when a request failed; other codes are its own failure
        s.complete = False
        s.notes.append(f"locust exited with {f.exit_code} (see locust.log)")
    lost = s.errors.get("connection_error", 0)
    if lost:
        s.complete = False
        s.notes.append(f"{lost} connection errors: the target refused or dropped connections")


def load(directory: Path) -> Results:
    """Read a results directory's raw files and derive every figure."""
    run = RunInfo.read(directory)
    records, bad = read_records(directory / "requests.jsonl")
    slo = run.slo if run else SLO()
    facts = read_facts(directory / "steps.jsonl") if run else None
    summaries = derive(records, facts, slo, read_probes(directory / "probes.jsonl"))
    return Results(summaries, bad, slo, run, speedups(records, summaries))


SUMMARY_FIELDS = [
    "target",
    "api",
    "users",
    "max_new_tokens",
    "rate",
    "requests",
    "ok",
    "output_tok_s",
    "tok_s_per_user",
    "requests_per_s",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p95_s",
    "itl_p99_s",
    "e2e_p50_s",
    "e2e_p95_s",
    "e2e_p99_s",
    "scheduled_rate",
    "achieved_rate",
    "not_sent",
    "late",
    "send_lag_p50_s",
    "send_lag_p99_s",
    "send_lag_max_s",
    *(f"{m}_from_due_p{q}_s" for m in ("ttft", "e2e") for q in (50, 95, 99)),
    "output_tok_s_ci_low",
    "output_tok_s_ci_high",
    *(f"{m}_p{q}_ci_{end}" for m in ("ttft", "itl", "e2e") for q in (50, 95, 99) for end in ("low", "high")),
    "window_s",
    "tok_s_cv",
    *(s for s in STATUSES if s != "ok"),
    "refused",
    "error_rate",
    "goodput",
    "token_mismatches",
    "achieved_concurrency",
    "peak_concurrency",
    "loadgen_cpu",
    "loadgen_bottleneck",
    "others_cpu",
    "wall_s",
    "complete",
    "disturbances",
    "requested_tokens",
    "output_tokens",
    "ended_early",
    "input_tokens_mean",
    "ignore_eos",
]


def write_summaries(directory: Path, results: Results) -> None:
    """summary.json (versioned, with the run's settings) and summary.csv (one row per step)."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "trusted": results.trusted,
        "run": asdict(results.run) if results.run else None,
        "steps": [asdict(s) for s in results.summaries],
    }
    (directory / "summary.json").write_text(json.dumps(doc, indent=2, default=str))
    with open(directory / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in results.summaries:
            writer.writerow({**asdict(s), **s.errors, "disturbances": "; ".join(s.disturbances)})
