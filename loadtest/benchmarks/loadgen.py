"""Load-generator capacity: what one Locust process sustains while its own error stays small — the streamed
tokens/s of the closed loop with its TTFT error < 2 ms, and the request rate of the open loop with its send lag
p99 < 2 ms and its achieved rate within 2 % of the scheduled one.

Starts the known-timing synthetic server (llm_loadtest.synthetic_server: 50 ms TTFT, known gaps) and runs one Locust
process per step. Closed loop, at growing concurrency: each request's measured TTFT against the time the server
logged sending its first token (same clock), tokens/s as a sweep derives it, the Locust process's CPU. Open loop, at
growing Poisson rates: the scheduled and achieved rates, the send lag (sent − due) p50/p99/max, late and not-sent
arrivals, the TTFT error, tokens/s and CPU. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llm_loadtest.metrics import StepSummary, summarize
from llm_loadtest.processes import ProcessGroup, free_port, locust_command, run_bounded, synthetic_server_command
from llm_loadtest.records import RequestRecord, read_records

LAG_LIMIT_MS, RATE_LIMIT, TTFT_LIMIT_MS = 2.0, 0.02, 2.0


def run_step(url: str, name: str, args: list[str], seconds: float, work: Path) -> tuple[list[RequestRecord], float]:
    """One headless Locust run; its records and its CPU (a share of one core)."""
    records = work / f"{name}.jsonl"
    cmd = locust_command(
        url, *args, "--stop-timeout", "10s", "--loglevel", "ERROR", "--only-summary", records_file=records
    )
    done = run_bounded(cmd, work / "locust.log", deadline_s=seconds + 60)
    return read_records(records)[0], done.cpu_share or 0.0


def ttft_error_ms(records: list[RequestRecord], truth: dict[str, dict]) -> np.ndarray:
    return np.abs([r.ttft_s - (truth[r.request_id]["sent"][0] - r.start) for r in records]) * 1000


def step_summary(records: list[RequestRecord], users: int, tokens: int, rate: float | None) -> StepSummary:
    wall = max(r.start + r.e2e_s for r in records) - min(r.start for r in records)
    return summarize(records, target="syn", api="tgi", users=users, max_new_tokens=tokens, wall_s=wall, rate=rate)


def closed_loop(url: str, a: argparse.Namespace, truth, work: Path) -> None:
    print(f"\nclosed loop\n{'users':>6}{'tok/s':>10}{'TTFT err p50':>14}{'p95':>9}{'ITL p50':>10}{'locust CPU':>12}")
    best = 0.0
    for users in [int(u) for u in a.users.split(",") if u]:
        args = ["-u", str(users), "-r", str(users), "-t", f"{a.seconds}s", "--max-new-tokens", str(a.tokens)]
        records, cpu = run_step(url, f"u{users}", args, a.seconds, work)
        sent = truth()
        ok = [r for r in records if r.ok and r.request_id in sent]
        if not ok:
            print(f"{users:>6}  no successful requests")
            continue
        s = step_summary(ok, users, a.tokens, None)
        p50, p95 = np.percentile(ttft_error_ms(ok, sent), [50, 95])
        print(
            f"{users:>6}{s.output_tok_s:>10.0f}{p50:>12.2f}ms{p95:>7.2f}ms{(s.itl_p50_s or 0) * 1000:>8.2f}ms"
            f"{cpu:>11.0%}",
            flush=True,
        )
        if p50 < TTFT_LIMIT_MS:
            best = max(best, s.output_tok_s)
    print(f"capacity: {best:.0f} streamed tok/s in one Locust process with TTFT error p50 < {TTFT_LIMIT_MS:g} ms")


def open_loop(url: str, a: argparse.Namespace, truth, work: Path) -> None:
    print(
        f"\nopen loop ({a.arrival} arrivals, {a.seconds} s per rate)\n{'rate':>6}{'sched':>8}{'achieved':>10}"
        f"{'lag p50':>9}{'p99':>8}{'max':>8}{'late':>6}{'unsent':>8}{'TTFT err p50':>14}{'tok/s':>8}{'CPU':>6}"
    )
    best = 0.0
    for rate in [float(r) for r in a.rates.split(",") if r]:
        args = ["-u", "1", "-t", f"{a.seconds + 60}s", "--max-new-tokens", str(a.tokens)]  # ends once answered
        args += ["--arrival-rate", f"{rate:g}", "--arrival", a.arrival, "--arrival-duration", str(a.seconds)]
        records, cpu = run_step(url, f"r{rate:g}", args, a.seconds, work)
        sent = truth()
        ok = [r for r in records if r.ok and r.request_id in sent]
        if not ok:
            print(f"{rate:>6g}  no successful requests")
            continue
        s = step_summary(records, 0, a.tokens, rate)
        err = np.percentile(ttft_error_ms(ok, sent), 50)
        lag = [1000 * (v or 0) for v in (s.send_lag_p50_s, s.send_lag_p99_s, s.send_lag_max_s)]
        off = abs((s.achieved_rate or 0) / (s.scheduled_rate or 1) - 1)
        print(
            f"{rate:>6g}{s.scheduled_rate or 0:>8.1f}{s.achieved_rate or 0:>10.1f}{lag[0]:>7.2f}ms{lag[1]:>6.2f}ms"
            f"{lag[2]:>6.1f}ms{s.late:>6}{s.not_sent:>8}{err:>12.2f}ms{s.output_tok_s:>8.0f}{cpu:>6.0%}",
            flush=True,
        )
        if lag[1] < LAG_LIMIT_MS and off < RATE_LIMIT and not s.not_sent:
            best = max(best, rate)
    print(
        f"capacity: {best:g} requests/s ({best * a.tokens:.0f} streamed tok/s) in one Locust process with send lag "
        f"p99 < {LAG_LIMIT_MS:g} ms and achieved rate within {RATE_LIMIT:.0%} of the scheduled one"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="16,64,128,256", help="closed-loop steps ('' for none)")
    p.add_argument("--rates", default="20,50,100,150", help="open-loop steps, requests/s ('' for none)")
    p.add_argument("--arrival", choices=("constant", "poisson"), default="poisson")
    p.add_argument("--gap-ms", type=float, default=5.0)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--seconds", type=int, default=8)
    a = p.parse_args()
    print(f"synthetic server: 50 ms TTFT, {a.gap_ms:g} ms gaps, {a.tokens} tokens; one Locust process")
    with tempfile.TemporaryDirectory() as tmp, ProcessGroup(Path(tmp)) as group:
        work = Path(tmp)
        log = work / "server.jsonl"
        port = free_port()
        server = synthetic_server_command(port, 50, a.gap_ms, a.tokens, log=log)
        url = f"http://127.0.0.1:{port}"
        group.start_ready("synthetic-server", server, f"{url}/health", timeout=30)

        def truth() -> dict[str, dict]:
            return {e["request_id"]: e for e in map(json.loads, log.read_text().splitlines())}

        if a.users:
            closed_loop(url, a, truth, work)
        if a.rates:
            open_loop(url, a, truth, work)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
