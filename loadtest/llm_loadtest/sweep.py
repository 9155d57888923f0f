"""The headless sweep: targets x max-new-tokens x (concurrency or arrival rate) steps, one Locust run per step.

A closed-loop step runs `locust --headless` with N users (N concurrent request loops) for a duration or a request
count; an open-loop step sends requests at a rate (constant or Poisson arrivals) for a duration, one generator per
Locust process. Either way in-flight requests finish (`--stop-timeout`) before the next step. The Locust master
appends each finished request to requests.jsonl as it finishes; after each step the sweep appends the step's facts
to steps.jsonl and derives summary.json and summary.csv again (results.py), so a kill at any moment loses nothing
that finished. Around the steps it sends calibration probes and measures the CPU other processes take (trust.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llm_loadtest.arrivals import DEFAULT_MAX_INFLIGHT
from llm_loadtest.client import RequestSpec, Target, stream_request
from llm_loadtest.http import Connection
from llm_loadtest.metrics import SLO, StepSummary
from llm_loadtest.processes import locust_command, log_tail, run_bounded
from llm_loadtest.prompts import load_prompts
from llm_loadtest.records import OWN_REQUESTS_FILE, append_records, read_records, step_key
from llm_loadtest.results import (
    Results,
    RunInfo,
    StepFacts,
    append_facts,
    derive,
    host_facts,
    read_facts,
    write_summaries,
)
from llm_loadtest.trust import PROBE_REQUESTS, PROBE_TOKENS, Probe, append_probe, cpu_sample, others_cores, read_probes
from llm_loadtest.workload import PLAN_FILE, WorkloadError, WorkloadSpec, build_plan, write_plan

ARTICLE_USERS = (1, 5, 10, 25, 50, 100, 200, 300)  # the article's concurrency steps


@dataclass(frozen=True)
class Load:
    """One step's load: `users` closed-loop users, or open-loop arrivals at `rate` requests/s (users 0)."""

    users: int = 0
    rate: float | None = None

    def __str__(self) -> str:
        return f"rate={self.rate:g}/s" if self.rate is not None else f"users={self.users}"


@dataclass
class SweepConfig:
    targets: list[Target]
    users: list[int] = field(default_factory=lambda: list(ARTICLE_USERS))
    rates: list[float] = field(default_factory=list)  # open-loop steps, requests/s, after the users' steps
    arrival: str = "poisson"  # the open-loop arrival process: constant or poisson
    seed: int = 0  # of the Poisson arrivals
    max_inflight: int = DEFAULT_MAX_INFLIGHT  # open loop: arrivals beyond this many in flight are not sent
    max_new_tokens: list[int] = field(default_factory=lambda: [128])
    duration_s: float | None = 30.0
    requests_per_step: int | None = None
    requests_per_user: int | None = None  # each user sends this many, then the step ends (one wave: 1)
    min_requests: int = 0  # with requests_per_user: users of a small step send more, for enough samples
    warmup_requests: int = 2
    request_timeout_s: float = 300.0
    reconnect_wait_s: float = 60.0  # after connection errors: how long the target may take to come back
    retry_pause_s: float = 0.5
    prompts: str = "default"
    processes: int = 1
    model: str | None = None
    slo: SLO = field(default_factory=SLO)
    out: Path = Path("results/sweep")
    locust_args: list[str] = field(default_factory=list)  # passed through to every Locust run
    host_extra: dict[str, Any] = field(default_factory=dict)  # facts the load tester cannot see, e.g. the GPU
    note: str | None = None  # what the run is, for the report's reader (gpu-check: random weights)
    budget_s: float | None = None  # steps not begun when this much time has passed are skipped, and said so
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)  # planned requests (workload.py), if active
    ignore_eos: bool = True  # sent where the dialect has it, so answers run to their cap
    workload_planned: bool = False  # workload.jsonl is written (a capacity search plans once for all its probes)

    @property
    def step_deadline_s(self) -> float:
        """Bounded: the run time (or, by count, a generous 10 minutes), a drain, and start-up."""
        longest = max([self.open_loop_run_s(r) for r in self.rates], default=0.0)
        return max(self.duration_s or 600, longest) + self.request_timeout_s + 60

    @property
    def loads(self) -> list[Load]:
        return [Load(users=u) for u in self.users] + [Load(rate=r) for r in self.rates]

    def open_loop_s(self, rate: float) -> float:
        """An open-loop step's arrivals last --duration, or by count --requests ÷ rate (30 s without either)."""
        if self.duration_s is not None:
            return self.duration_s
        return self.requests_per_step / rate if self.requests_per_step else 30.0

    def open_loop_run_s(self, rate: float) -> int:
        """Its Locust run's bound: the arrivals and the last one's timeout. The run ends once the last arrival is
        answered (locust_plugin), so this is reached only where an answer never comes."""
        return math.ceil(self.open_loop_s(rate) + self.request_timeout_s) + 5


class SweepError(RuntimeError):
    pass


def warm_up(cfg: SweepConfig, target: Target, max_new_tokens: int) -> None:
    """A few sequential requests first, unrecorded: the first requests pay for lazy set-up on many servers. A
    target that cannot be reached at all stops the sweep with one clear line."""
    prompts = load_prompts(cfg.prompts)
    conn = Connection(target.url)
    try:
        for _ in range(max(1, cfg.warmup_requests)):
            spec = RequestSpec(prompts.next(), max_new_tokens, cfg.request_timeout_s, model=cfg.model)
            r = stream_request(conn, target, spec)
            append_records(cfg.out / OWN_REQUESTS_FILE, [r])
            if r.status == "connection_error":
                raise SweepError(f"target {target.name} ({target.url}) cannot be reached: {r.error}")
            if r.status == "not_event_stream":  # every request would fail the same way: a wrong URL or a proxy
                raise SweepError(f"target {target.name} ({target.url}) does not answer with a stream: {r.error[:200]}")
    finally:
        conn.close()


def wait_for_target(cfg: SweepConfig, target: Target, max_new_tokens: int) -> bool:
    """True once the target answers a request again, False if it stays away for `reconnect_wait_s`."""
    deadline = time.monotonic() + cfg.reconnect_wait_s
    while True:
        try:
            warm_up(cfg, target, max_new_tokens)
            return True
        except SweepError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)


def step_command(cfg: SweepConfig, target: Target, load: Load, max_new_tokens: int) -> list[str]:
    # Open loop: one user per Locust process, each running its process's generator.
    users = load.users if load.rate is None else cfg.processes
    args = [
        "--only-summary",
        "--users",
        str(users),
        "--spawn-rate",
        "10000",  # all users at once: the article's N concurrent requests, not a ramp
        "--api",
        target.api,
        "--target-name",
        target.name,
        "--max-new-tokens",
        str(max_new_tokens),
        "--prompts",
        cfg.prompts,
        "--request-timeout",
        str(cfg.request_timeout_s),
        "--retry-pause",
        str(cfg.retry_pause_s),
        # Drain: users finish the request in flight when the step ends.
        "--stop-timeout",
        f"{int(cfg.request_timeout_s) + 5}s",
        "--loglevel",
        "WARNING",
    ]
    if load.rate is not None:
        seconds = cfg.open_loop_s(load.rate)
        args += ["--arrival-rate", f"{load.rate:g}", "--arrival", cfg.arrival, "--seed", str(cfg.seed)]
        args += ["--arrival-duration", f"{seconds:g}", "--max-inflight", str(cfg.max_inflight)]
        args += ["--run-time", f"{cfg.open_loop_run_s(load.rate)}s"]
    else:
        if cfg.duration_s is not None:
            args += ["--run-time", f"{max(1, round(cfg.duration_s))}s"]
        if cfg.requests_per_user:
            per_user = max(cfg.requests_per_user, math.ceil(cfg.min_requests / users))
            args += ["--requests-per-user", str(per_user), "--max-requests", str(per_user * users)]
        elif cfg.requests_per_step:
            args += ["--max-requests", str(cfg.requests_per_step)]
    if cfg.workload.active:
        args += ["--workload", str(cfg.out / PLAN_FILE)]
    if not cfg.ignore_eos:
        args.append("--no-ignore-eos")
    args += cfg.locust_args
    if cfg.processes > 1:
        args += ["--processes", str(cfg.processes)]
    if cfg.model:
        args += ["--model", cfg.model]
    return locust_command(target.url, *args, records_file=cfg.out / "requests.jsonl")


def probe_round(cfg: SweepConfig, after_step: int, min_s: float = 0.5) -> None:
    """The same short request to every target, PROBE_REQUESTS times (the fastest is kept), and the CPU other
    processes took meanwhile; it lasts at least `min_s`, for a CPU figure steadier than one request."""
    prompt = load_prompts(cfg.prompts).next()
    urls = [t.url for t in cfg.targets]
    before = cpu_sample(urls)
    found = []
    for target in cfg.targets:
        conn = Connection(target.url)
        try:
            spec = RequestSpec(prompt, PROBE_TOKENS, min(cfg.request_timeout_s, 60), model=cfg.model)
            done = [stream_request(conn, target, spec) for _ in range(PROBE_REQUESTS)]
        finally:
            conn.close()
        append_records(cfg.out / OWN_REQUESTS_FILE, done)
        ok = [r for r in done if r.ok]
        ttft = min((r.ttft_s for r in ok if r.ttft_s is not None), default=None)
        found.append((target.name, ttft, min((r.e2e_s for r in ok), default=None)))
    time.sleep(max(0.0, min_s - (time.monotonic() - before.time)))
    others = others_cores(before, cpu_sample(urls))
    for name, ttft, e2e in found:
        append_probe(cfg.out / "probes.jsonl", Probe(name, after_step, time.time(), ttft, e2e, others))


def prepare_workload(cfg: SweepConfig) -> SweepConfig:
    """Plan the requests before the first step and write them to workload.jsonl, which every step's Locust sends.
    Where every request has a cap of its own, the steps' `max_new_tokens` is the largest of them."""
    if not cfg.workload.active or cfg.workload_planned:
        return cfg
    chat = bool(cfg.targets) and all(t.api == "openai-chat" for t in cfg.targets)
    try:
        plan = build_plan(cfg.workload, chat=chat)
    except WorkloadError as exc:
        raise SweepError(str(exc)) from None
    write_plan(cfg.out / PLAN_FILE, plan)
    caps = [p.max_tokens for p in plan]
    steps = cfg.max_new_tokens if None in caps else [max(c for c in caps if c is not None)]
    return replace(cfg, max_new_tokens=steps, workload_planned=True)


def settings(cfg: SweepConfig) -> dict:
    """Every setting of the run, as saved in run.json."""
    return {**asdict(cfg), "out": str(cfg.out)}


def run_sweep(
    cfg: SweepConfig, progress: Callable[[str], None] = print, run: RunInfo | None = None
) -> list[StepSummary]:
    """`run`: the run this sweep is part of (a capacity search's probes), else one of its own."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    cfg = prepare_workload(cfg)
    run = run or RunInfo(settings(cfg), host={**host_facts(), **cfg.host_extra})
    run.write(cfg.out)
    records_path, facts_path, log = cfg.out / "requests.jsonl", cfg.out / "steps.jsonl", cfg.out / "locust.log"
    probes_path = cfg.out / "probes.jsonl"
    results = Results([], slo=cfg.slo, run=run)
    loads = cfg.loads
    total = len(cfg.targets) * len(cfg.max_new_tokens) * len(loads)
    urls = [t.url for t in cfg.targets]
    for target in cfg.targets:  # every target warm before the first probe: a cold server's requests calibrate nothing
        warm_up(cfg, target, cfg.max_new_tokens[0])
    # Probes are numbered by the steps of the whole directory: a capacity search runs one sweep per probe into it.
    done_before = len(read_facts(facts_path))
    probe_round(cfg, done_before)
    n = 0
    for target in cfg.targets:
        for i, max_new_tokens in enumerate(cfg.max_new_tokens):
            if i:
                warm_up(cfg, target, max_new_tokens)
            for load in loads:
                if cfg.budget_s is not None and time.monotonic() - t0 > cfg.budget_s:
                    progress(f"time budget of {cfg.budget_s:g}s spent: the last {total - n} of {total} steps skipped")
                    return results.summaries
                n += 1
                cpu_before = cpu_sample(urls)
                done = run_bounded(step_command(cfg, target, load, max_new_tokens), log, cfg.step_deadline_s)
                others = others_cores(cpu_before, cpu_sample(urls))
                facts = StepFacts(
                    target.name,
                    target.api,
                    load.users,
                    max_new_tokens,
                    done.code,
                    cfg.step_deadline_s,
                    done.cpu_share,
                    others,
                    load.rate,
                )
                records, results.bad_lines = read_records(records_path)
                key = facts.key
                if done.code not in (-1, 0, 1) and not any(step_key(r) == key for r in records):
                    raise SweepError(f"locust failed (exit {done.code}): {log_tail(log, 1)}")
                append_facts(facts_path, facts)
                probe_round(cfg, done_before + n)
                results.summaries = derive(records, read_facts(facts_path), cfg.slo, read_probes(probes_path))
                write_summaries(cfg.out, results)
                summary = next(s for s in results.summaries if step_key(s) == key)
                progress(progress_line(n, total, summary))
                if summary.errors.get("connection_error", 0) and not wait_for_target(cfg, target, max_new_tokens):
                    raise SweepError(
                        f"target {target.name} went away during the step at {load} and did not answer "
                        f"within {cfg.reconnect_wait_s:g}s; {n} steps and their records are in {cfg.out}"
                    )
    return results.summaries


def progress_line(n: int, total: int, s: StepSummary) -> str:
    def ms(v: float | None) -> str:
        return f"{v * 1000:.0f} ms" if v is not None else "-"

    errors = sum(s.errors.values())
    flag = "  [load generator limited]" if s.loadgen_bottleneck else ""
    if s.open_loop:
        achieved = "-" if s.achieved_rate is None else f"{s.achieved_rate:.1f}/s"
        return (
            f"[{n}/{total}] {s.target} max_new_tokens={s.max_new_tokens} rate={s.rate:g}/s: {s.requests} sent "
            f"(achieved {achieved}), {s.not_sent} not sent, {s.late} late, send lag p99 {ms(s.send_lag_p99_s)}, "
            f"TTFT p50 {ms(s.ttft_p50_s)} ({ms(s.ttft_from_due_p50_s)} from due), e2e p50 {ms(s.e2e_p50_s)} "
            f"({ms(s.e2e_from_due_p50_s)} from due), {errors} errors{flag}"
        )
    return (
        f"[{n}/{total}] {s.target} max_new_tokens={s.max_new_tokens} users={s.users}: {s.requests} requests, "
        f"{s.output_tok_s:.1f} tok/s, TTFT p50 {ms(s.ttft_p50_s)}, e2e p50 {ms(s.e2e_p50_s)}, "
        f"{errors} errors{flag}"
    )
