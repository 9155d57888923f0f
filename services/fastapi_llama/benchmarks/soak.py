"""Soak: the article's hardest point, 300 concurrent streams x 256 tokens, held against each service mode.

For each mode, starts `fastapi-llama --batching MODE` on 127.0.0.1 with TGI's default admission limit
(--max-concurrent-requests 128), drives 300 Locust users (a closed loop, one streamed request after another) for
--duration, lets in-flight requests finish or time out, then reports:

- requests by status (ok / 429 / other http_error / stream_error / timeout / connection_error / cancelled);
- that none is missing: the records in requests.jsonl against the server's own tgi_request_count;
- the load generator's CPU (a share of one core per Locust process);
- the server's resident memory after warm-up, at its peak and after the drain, and whether the growth stayed under
  --memory-bound-mib;
- that the server still answers /health and a fresh request afterwards.

Writes results/soak/<timestamp>/soak.json and each mode's requests.jsonl; exits 1 if any check failed.
A benchmark, not a test: the figures are this machine's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from llm_loadtest.client import Target
from llm_loadtest.local import interruptible
from llm_loadtest.processes import ProcessGroup, fastapi_llama_command, free_port, tiny_model_env
from llm_loadtest.records import RequestRecord, read_records
from llm_loadtest.sweep import SweepConfig, SweepError, run_sweep

MIB = 1024 * 1024


@dataclass
class SoakResult:
    mode: str
    users: int
    max_new_tokens: int
    duration_s: float
    requests: int
    by_status: dict[str, int]
    server_requests: int  # tgi_request_count over the soak, warm-up excluded
    missing: int  # requests the server saw that have no record
    loadgen_cpu: float | None
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    memory_ok: bool
    healthy_after: bool
    fresh_request_s: float | None
    output_tok_s: float

    @property
    def passed(self) -> bool:
        return self.missing == 0 and self.memory_ok and self.healthy_after and self.fresh_request_s is not None


class MemorySampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every half second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def rss(self) -> int:
        try:
            return sum(p.memory_info().rss for p in [self.process, *self.process.children(recursive=True)])
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> None:
        self._done.set()
        self.join()


def status_label(r: RequestRecord) -> str:
    """The load tester's status, with refusals named: TGI refuses with 429, or on a stream with an error event."""
    if r.http_status == 429:
        return "429"
    if r.status == "stream_error" and "overloaded" in (r.error or ""):
        return "overloaded (in-stream)"
    return r.status


def request_count(url: str) -> int:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("tgi_request_count "):
            return int(float(line.split()[1]))
    raise RuntimeError(f"{url}/metrics has no tgi_request_count")


def fresh_request(url: str) -> float | None:
    """Seconds for one short request after the soak, or None when it fails."""
    t0 = time.monotonic()
    try:
        r = httpx.post(
            f"{url}/generate", json={"inputs": "Still there?", "parameters": {"max_new_tokens": 8}}, timeout=60
        )
    except httpx.HTTPError:
        return None
    return time.monotonic() - t0 if r.status_code == 200 else None


def settle(url: str, seconds: float = 30) -> int:
    """tgi_request_count once it stops moving: requests the clients gave up on still reach the handlers."""
    last, deadline = request_count(url), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(2)
        now = request_count(url)
        if now == last:
            return now
        last = now
    return last


def soak_mode(group: ProcessGroup, args: argparse.Namespace, mode: str, out: Path) -> SoakResult:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    limits = (
        "--max-concurrent-requests",
        str(args.max_concurrent_requests),
        "--max-batch-size",
        str(args.max_batch_size),
    )
    cmd = fastapi_llama_command(args.model_id, port, "--batching", mode, *limits)
    server = group.start_ready(f"fastapi-llama-{mode}", cmd, f"{url}/health", env=tiny_model_env())
    fresh_request(url)  # warm-up: the first request pays for lazy set-up
    sampler = MemorySampler(server.proc.pid)
    rss_start = sampler.rss()
    sampler.start()
    before = request_count(url)
    cfg = SweepConfig(
        targets=[Target(mode, url)],
        users=[args.users],
        max_new_tokens=[args.max_new_tokens],
        duration_s=args.duration,
        warmup_requests=1,
        request_timeout_s=args.request_timeout,
        prompts="same",
        out=out / mode,
    )
    print(f"{mode}: {args.users} users x {args.max_new_tokens} tokens for {args.duration:.0f}s on {url}", flush=True)
    try:
        summary = run_sweep(cfg, progress=lambda line: print(f"  {line}", flush=True))[0]
    except SweepError as exc:
        print(f"  the sweep stopped: {exc}", flush=True)
        summary = None
    server_requests = settle(url) - before - cfg.warmup_requests
    sampler.stop()
    rss_end = sampler.rss()
    records, _ = read_records(out / mode / "requests.jsonl")
    by_status = Counter(status_label(r) for r in records)
    healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
    fresh = fresh_request(url)
    growth_mib = (rss_end - rss_start) / MIB
    return SoakResult(
        mode=mode,
        users=args.users,
        max_new_tokens=args.max_new_tokens,
        duration_s=args.duration,
        requests=len(records),
        by_status={k: v for k, v in sorted(by_status.items()) if v},
        server_requests=server_requests,
        # Connection errors never reach the server, so they cannot be compared with its count.
        missing=max(0, server_requests - (len(records) - by_status.get("connection_error", 0))),
        loadgen_cpu=summary.loadgen_cpu if summary else None,
        rss_start_mib=rss_start / MIB,
        rss_peak_mib=max(sampler.peak, rss_end) / MIB,
        rss_end_mib=rss_end / MIB,
        memory_ok=growth_mib <= args.memory_bound_mib,
        healthy_after=healthy,
        fresh_request_s=fresh,
        output_tok_s=summary.output_tok_s if summary else 0.0,
    )


def print_table(results: list[SoakResult], bound_mib: float) -> None:
    print(
        f"\n{'mode':<11} {'requests':>8}  {'by status':<52} {'server':>6} {'missing':>7} {'loadgen':>7}  "
        f"{'RSS start/peak/end MiB':<24} {'health':<8} {'fresh':>6}"
    )
    for r in results:
        statuses = ", ".join(f"{k} {v}" for k, v in r.by_status.items())
        cpu = f"{r.loadgen_cpu:.0%}" if r.loadgen_cpu is not None else "-"
        memory = f"{r.rss_start_mib:.0f}/{r.rss_peak_mib:.0f}/{r.rss_end_mib:.0f}" + ("" if r.memory_ok else " !")
        fresh = f"{r.fresh_request_s:.2f}s" if r.fresh_request_s is not None else "FAIL"
        print(
            f"{r.mode:<11} {r.requests:>8}  {statuses:<52} {r.server_requests:>6} {r.missing:>7} {cpu:>7}  "
            f"{memory:<24} {'ok' if r.healthy_after else 'FAIL':<8} {fresh:>6}"
        )
    print(
        f"\nmemory bound: growth from start to end under {bound_mib:.0f} MiB; "
        f"loadgen: CPU of the Locust process as a share of one core"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-id", default=".cache/models/tiny-llama")
    p.add_argument("--modes", default="naive,static,continuous")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode")
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--max-concurrent-requests", type=int, default=128, help="TGI's default admission limit")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--memory-bound-mib", type=float, default=256.0)
    p.add_argument("--results", type=Path, default=Path("results/soak"))
    args = p.parse_args()
    out = args.results / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    group = ProcessGroup(out)
    results: list[SoakResult] = []
    try:
        with interruptible(group):
            for mode in args.modes.split(","):
                results.append(soak_mode(group, args, mode, out))
                (out / "soak.json").write_text(
                    json.dumps([{**asdict(r), "passed": r.passed} for r in results], indent=2)
                )
                group.stop()  # one server at a time: each mode gets the machine to itself
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished modes are in {out}/soak.json", file=sys.stderr)
        sys.exit(130)
    print_table(results, args.memory_bound_mib)
    print(f"results: {out}/soak.json")
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
