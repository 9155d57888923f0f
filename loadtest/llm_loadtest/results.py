"""A run's saved results, and the one function that derives every figure from them.

A results directory holds the raw inputs and what is derived from them:

| file | written | holds |
| --- | --- | --- |
| `run.json` | at the start | schema version, host, versions, every setting of the run |
| `requests.jsonl` | as each request finishes | one RequestRecord per request (records.py) |
| `steps.jsonl` | as each step ends | StepFacts: what the records cannot say (the load generator's CPU, how it exited) |
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

from llm_loadtest.metrics import SLO, STATUSES, StepSummary, summarize
from llm_loadtest.records import RequestRecord, read_records

SCHEMA_VERSION = 2  # 1: summary.json was a bare list and per-step facts lived only in it
StepKey = tuple[str, int, int]  # target, users, max_new_tokens


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

    @property
    def key(self) -> StepKey:
        return (self.target, self.users, self.max_new_tokens)


def append_facts(path: Path, facts: StepFacts) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(facts)) + "\n")


def read_facts(path: Path) -> list[StepFacts]:
    if not path.exists():
        return []
    known = {f.name for f in fields(StepFacts)}
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(StepFacts(**{k: v for k, v in json.loads(line).items() if k in known}))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a kill
    return out


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
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{directory}: results schema {data.get('schema_version')}, this llm-loadtest reads "
                f"{SCHEMA_VERSION}; run the sweep again"
            )
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass
class Results:
    """Every step's figures, derived from the records and the step facts."""

    summaries: list[StepSummary]
    bad_lines: int = 0
    slo: SLO = field(default_factory=SLO)
    run: RunInfo | None = None

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(s.target for s in self.summaries))

    @property
    def token_caps(self) -> list[int]:
        return sorted({s.max_new_tokens for s in self.summaries})

    def series(self, target: str, max_new_tokens: int) -> list[StepSummary]:
        return sorted(
            (s for s in self.summaries if s.target == target and s.max_new_tokens == max_new_tokens),
            key=lambda s: s.users,
        )


def step_wall(records: Sequence[RequestRecord]) -> float:
    """From the first request sent to the last one finished."""
    if not records:
        return 0.0
    return max(r.start + r.e2e_s for r in records) - min(r.start for r in records)


def derive(
    records: Sequence[RequestRecord],
    facts: Sequence[StepFacts] | None,
    slo: SLO | None = None,
) -> list[StepSummary]:
    """One StepSummary per step, in the order the steps ran. `facts=None`: records alone (no sweep ran them)."""
    by_step: dict[StepKey, list[RequestRecord]] = {}
    apis: dict[StepKey, str] = {}
    for r in records:
        key = (r.target, r.users, r.max_new_tokens)
        by_step.setdefault(key, []).append(r)
        apis.setdefault(key, r.api)
    known = {f.key: f for f in facts or []}
    for key, f in known.items():
        apis.setdefault(key, f.api)
    summaries = []
    for key in dict.fromkeys([*known, *by_step]):
        recs = by_step.get(key, [])
        f = known.get(key)
        target, users, cap = key
        s = summarize(
            recs,
            target=target,
            api=apis[key],
            users=users,
            max_new_tokens=cap,
            wall_s=step_wall(recs),
            slo=slo or SLO(),
            loadgen_cpu=f.loadgen_cpu if f else None,
        )
        _judge_complete(s, f, expected=facts is not None)
        summaries.append(s)
    return summaries


def _judge_complete(s: StepSummary, f: StepFacts | None, expected: bool) -> None:
    if f is None:
        if expected:
            s.complete = False
            s.notes.append("no summary was saved for this step (the sweep stopped during it)")
    elif f.exit_code == -1:
        s.complete = False
        s.notes.append(f"stopped at the step's deadline ({f.deadline_s:.0f}s)")
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
    return Results(derive(records, facts, slo), bad, slo, run)


SUMMARY_FIELDS = [
    "target",
    "api",
    "users",
    "max_new_tokens",
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
    "e2e_p50_s",
    "e2e_p95_s",
    "e2e_p99_s",
    *(s for s in STATUSES if s != "ok"),
    "refused",
    "error_rate",
    "goodput",
    "token_mismatches",
    "achieved_concurrency",
    "peak_concurrency",
    "loadgen_cpu",
    "loadgen_bottleneck",
    "wall_s",
    "complete",
]


def write_summaries(directory: Path, results: Results) -> None:
    """summary.json (versioned, with the run's settings) and summary.csv (one row per step)."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "run": asdict(results.run) if results.run else None,
        "steps": [asdict(s) for s in results.summaries],
    }
    (directory / "summary.json").write_text(json.dumps(doc, indent=2, default=str))
    with open(directory / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in results.summaries:
            writer.writerow({**asdict(s), **s.errors})
