"""The headless sweep: targets x max-new-tokens x concurrency steps, one Locust run per step.

Each step runs `locust --headless` with N users (N concurrent request loops) for a duration or a request count,
then lets in-flight requests finish (`--stop-timeout`) before the next step. The Locust master appends each
finished request to requests.jsonl as it finishes; after each step the sweep rewrites summary.json and
summary.csv from those records, so a kill at any moment loses nothing that finished.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from llm_loadtest.client import RequestSpec, Target, stream_request
from llm_loadtest.http import Connection
from llm_loadtest.metrics import SLO, StepSummary, summarize
from llm_loadtest.prompts import load_prompts
from llm_loadtest.records import RequestRecord, read_records

LOCUSTFILE = Path(__file__).resolve().parents[1] / "locustfile.py"
ARTICLE_USERS = (1, 5, 10, 25, 50, 100, 200, 300)
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
    "http_error",
    "stream_error",
    "timeout",
    "connection_error",
    "cancelled",
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


@dataclass
class SweepConfig:
    targets: list[Target]
    users: list[int] = field(default_factory=lambda: list(ARTICLE_USERS))
    max_new_tokens: list[int] = field(default_factory=lambda: [128])
    duration_s: float | None = 30.0
    requests_per_step: int | None = None
    requests_per_user: int | None = None  # each user sends this many, then the step ends (one wave: 1)
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


def step_records(records: Sequence[RequestRecord], target: str, users: int, max_new_tokens: int) -> list[RequestRecord]:
    return [r for r in records if r.target == target and r.users == users and r.max_new_tokens == max_new_tokens]


def step_wall(records: Sequence[RequestRecord]) -> float:
    """From the first request sent to the last one finished: derived from the records alone, so that the report
    recomputes every figure from requests.jsonl."""
    if not records:
        return 0.0
    return max(r.start + r.e2e_s for r in records) - min(r.start for r in records)


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
            if r.status == "connection_error":
                raise SweepError(f"target {target.name} ({target.url}) cannot be reached: {r.error}")
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


def locust_command(cfg: SweepConfig, target: Target, users: int, max_new_tokens: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        target.url,
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
        "--records-file",
        str(cfg.out / "requests.jsonl"),
        # Drain: users finish the request in flight when the step ends.
        "--stop-timeout",
        f"{int(cfg.request_timeout_s) + 5}s",
        "--loglevel",
        "WARNING",
    ]
    if cfg.duration_s is not None:
        cmd += ["--run-time", f"{max(1, round(cfg.duration_s))}s"]
    if cfg.requests_per_user:
        cmd += ["--requests-per-user", str(cfg.requests_per_user), "--max-requests", str(cfg.requests_per_user * users)]
    elif cfg.requests_per_step:
        cmd += ["--max-requests", str(cfg.requests_per_step)]
    cmd += cfg.locust_args
    if cfg.processes > 1:
        cmd += ["--processes", str(cfg.processes)]
    if cfg.model:
        cmd += ["--model", cfg.model]
    return cmd


def run_locust(cmd: list[str], log_path: Path, deadline_s: float) -> tuple[int, float, float]:
    """Run one step; returns (exit code, wall seconds, CPU seconds of the Locust processes per process). A step
    still running at its deadline is stopped (SIGTERM: Locust shuts down and its finished records stay)."""
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            return _watch(proc, t0, deadline_s)
        except BaseException:  # Ctrl-C or SIGTERM of the sweep: the step's Locust goes too
            _stop(proc)
            raise


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _watch(proc: subprocess.Popen, t0: float, deadline_s: float) -> tuple[int, float, float]:
    ps = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            for p in [ps, *ps.children(recursive=True)]:
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
        except psutil.Error:
            pass
        if time.monotonic() - t0 > deadline_s:
            _stop(proc)
            return -1, time.monotonic() - t0, sum(cpu.values()) / max(1, len(cpu))
        time.sleep(0.5)
    return proc.returncode, time.monotonic() - t0, sum(cpu.values()) / max(1, len(cpu))


def write_summaries(out: Path, summaries: Sequence[StepSummary]) -> None:
    (out / "summary.json").write_text(json.dumps([asdict(s) for s in summaries], indent=2))
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in summaries:
            writer.writerow({**asdict(s), **s.errors})


def run_sweep(cfg: SweepConfig, progress: Callable[[str], None] = print) -> list[StepSummary]:
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "sweep.json").write_text(
        json.dumps(
            {
                "targets": [asdict(t) for t in cfg.targets],
                "users": cfg.users,
                "max_new_tokens": cfg.max_new_tokens,
                "duration_s": cfg.duration_s,
                "requests_per_step": cfg.requests_per_step,
                "requests_per_user": cfg.requests_per_user,
                "prompts": cfg.prompts,
                "processes": cfg.processes,
                "slo": asdict(cfg.slo),
                "started": time.time(),
            },
            indent=2,
        )
    )
    summaries: list[StepSummary] = []
    total = len(cfg.targets) * len(cfg.max_new_tokens) * len(cfg.users)
    n = 0
    for target in cfg.targets:
        for max_new_tokens in cfg.max_new_tokens:
            warm_up(cfg, target, max_new_tokens)
            for users in cfg.users:
                n += 1
                # Bounded: the run time (or, by count, a generous 10 minutes), a drain, and start-up.
                deadline = (cfg.duration_s or 600) + cfg.request_timeout_s + 60
                code, proc_wall, cpu_s = run_locust(
                    locust_command(cfg, target, users, max_new_tokens), cfg.out / "locust.log", deadline
                )
                records, _ = read_records(cfg.out / "requests.jsonl")
                recs = step_records(records, target.name, users, max_new_tokens)
                wall = step_wall(recs)
                summary = summarize(
                    recs,
                    target=target.name,
                    api=target.api,
                    users=users,
                    max_new_tokens=max_new_tokens,
                    wall_s=wall,
                    slo=cfg.slo,
                    loadgen_cpu=cpu_s / proc_wall if proc_wall else None,
                )
                if code == -1:
                    summary.complete = False
                    summary.notes.append(f"stopped at the step's deadline ({deadline:.0f}s)")
                elif code not in (0, 1):  # Locust exits 1 when a request failed; other codes are its own failure
                    if not recs:
                        raise SweepError(f"locust failed (exit {code}): {_last_line(cfg.out / 'locust.log')}")
                    summary.complete = False
                    summary.notes.append(f"locust exited with {code} (see locust.log)")
                lost = summary.errors.get("connection_error", 0)
                if lost:
                    summary.complete = False
                    summary.notes.append(f"{lost} connection errors: the target refused or dropped connections")
                summaries.append(summary)
                write_summaries(cfg.out, summaries)
                progress(progress_line(n, total, summary))
                if lost and not wait_for_target(cfg, target, max_new_tokens):
                    raise SweepError(
                        f"target {target.name} went away during the step at {users} users and did not answer "
                        f"within {cfg.reconnect_wait_s:g}s; {n} steps and their records are in {cfg.out}"
                    )
    return summaries


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def progress_line(n: int, total: int, s: StepSummary) -> str:
    def ms(v: float | None) -> str:
        return f"{v * 1000:.0f} ms" if v is not None else "-"

    errors = sum(s.errors.values())
    flag = "  [load generator limited]" if s.loadgen_bottleneck else ""
    return (
        f"[{n}/{total}] {s.target} max_new_tokens={s.max_new_tokens} users={s.users}: {s.requests} requests, "
        f"{s.output_tok_s:.1f} tok/s, TTFT p50 {ms(s.ttft_p50_s)}, e2e p50 {ms(s.e2e_p50_s)}, "
        f"{errors} errors{flag}"
    )
