"""Soak: the article's hardest point, 300 concurrent streams x 256 tokens, held against each service mode, several
times over against the same server process, to tell a leak from an allocator that keeps what it freed.

For each mode, starts `fastapi-llama --batching MODE --debug-memory --tracemalloc 1` on 127.0.0.1 with TGI's default
admission limit (--max-concurrent-requests 128), then --repeats times (3): drives 300 Locust users (a closed loop,
one streamed request after another) for --duration (10 s), lets in-flight requests finish or time out
(--request-timeout, 45 s), and records

- requests by status (ok / 429 / other http_error / stream_error / timeout / connection_error / cancelled);
- that none is missing: the records (requests.jsonl and the sweep's own warm-ups and probes) against the server's
  own tgi_request_count over the repetition;
- the server's resident memory at the repetition's start, its peak, its end after the drain, and once the
  allocator handed its free pages back to the OS (--trim: malloc_trim(0), or jemalloc's purge), with its anonymous
  part (RssAnon: without the pages of mapped files, which the kernel maps in and out);
- with --tracemalloc, the Python allocation sites that grew most during the repetition (printed).

About 8 minutes for the three modes on 2 cores.

The verdict on memory (soak_growth.py): a leak is suspected when every repetition after the first ends more than
--leak-bound-mib above the previous one (the trimmed anonymous memory, where there is); growth in the first
repetition that then stays is the allocator's retention. Afterwards the server must still answer /health and a
fresh request.

Writes results/soak/<timestamp>/soak.json and each repetition's results in MODE/N/; prints one verdict line per
mode and exits 1 if any check failed. A benchmark, not a test: the figures are this machine's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from soak_growth import judge

from llm_loadtest.client import Target
from llm_loadtest.local import interruptible
from llm_loadtest.processes import ProcessGroup, fastapi_llama_command, free_port, tiny_model_env
from llm_loadtest.reconcile import arrived
from llm_loadtest.records import OWN_REQUESTS_FILE, RequestRecord, read_records
from llm_loadtest.sweep import SweepConfig, SweepError, run_sweep

MIB = 1024 * 1024
TOP_SITES = 5


@dataclass
class Site:
    """A Python allocation site that grew during a repetition (tracemalloc, innermost frame)."""

    site: str
    size_diff_kib: float
    count_diff: int


@dataclass
class Repeat:
    """One repetition of the load against the mode's server: its outcomes and the server's memory."""

    index: int
    requests: int
    by_status: dict[str, int]
    server_requests: int  # tgi_request_count's increase over the repetition
    missing: int  # requests the server counted that have no record
    loadgen_cpu: float | None
    output_tok_s: float
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float  # after the drain
    rss_trimmed_mib: float | None  # after malloc_trim(0) or jemalloc's purge; None without --trim or either
    anon_settled_mib: float | None  # anonymous resident memory at that point (RssAnon); None off Linux
    traced_mib: float | None = None  # live Python memory under tracemalloc
    top_growth: list[Site] = field(default_factory=list)

    @property
    def settled_mib(self) -> float:
        """What the leak rule reads: the anonymous memory at the end, trimmed where it could be; the end's RSS
        where there is no RssAnon."""
        if self.anon_settled_mib is not None:
            return self.anon_settled_mib
        return self.rss_trimmed_mib if self.rss_trimmed_mib is not None else self.rss_end_mib


@dataclass
class SoakResult:
    """One mode: its repetitions, the leak verdict over them, and whether the server still serves afterwards."""

    mode: str
    users: int
    max_new_tokens: int
    duration_s: float | None  # of each repetition; None when it is --requests long
    requests_per_repeat: int | None
    server_args: list[str]
    server_env: dict[str, str]
    repeats: list[Repeat]
    leak_suspected: bool | None
    leak_bound_mib: float
    growth_mib: list[float]  # each repetition's settled end minus the previous one's
    healthy_after: bool
    fresh_request_s: float | None

    @property
    def missing(self) -> int:
        return sum(r.missing for r in self.repeats)

    @property
    def passed(self) -> bool:
        return (
            self.missing == 0
            and self.leak_suspected is False
            and self.healthy_after
            and self.fresh_request_s is not None
        )


class MemorySampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every half second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def processes(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def rss(self) -> int:
        try:
            return sum(p.memory_info().rss for p in self.processes())
        except psutil.Error:
            return 0

    def anon(self) -> int | None:
        """Anonymous resident memory (Linux: RssAnon): the heaps, tensors and Python objects, without the pages of
        mapped files (libraries, the model's weights), which the kernel maps in and out as code paths change."""
        try:
            total = 0
            for p in self.processes():
                with open(f"/proc/{p.pid}/status") as f:
                    total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
            return total
        except (OSError, StopIteration, psutil.Error):
            return None

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


def trimmed_rss(url: str, sampler: MemorySampler) -> int | None:
    """Resident memory once the allocator handed its free pages back (malloc_trim(0), or jemalloc's purge); None
    with neither."""
    answer = httpx.post(f"{url}/debug/memory/trim", timeout=60).json()
    return sampler.rss() if answer["released"] is not None else None


def grown_sites(url: str) -> tuple[float | None, list[Site]]:
    """Live traced Python memory (MiB) and the sites that grew since the previous call; (None, []) untraced."""
    report = httpx.get(f"{url}/debug/memory", params={"top": TOP_SITES}, timeout=120).json()
    if not report["tracing"]:
        return None, []
    sites = [Site(s["site"], s["size_diff_bytes"] / 1024, s["count_diff"]) for s in report["top_growth"]]
    return report["traced_bytes"] / MIB, sites


def short_site(site: str) -> str:
    """A site's path from its package on: .../site-packages/torch/x.py:3 -> torch/x.py:3."""
    for marker in ("site-packages/", "lib/python3."):
        if marker in site:
            tail = site.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3." else tail
    return site.split("services/fastapi_llama/", 1)[-1]


def run_repeat(args: argparse.Namespace, mode: str, url: str, pid: int, index: int, out: Path) -> Repeat:
    sampler = MemorySampler(pid)
    rss_start = sampler.rss()
    sampler.start()
    before = request_count(url)
    cfg = SweepConfig(
        targets=[Target(mode, url)],
        users=[args.users],
        max_new_tokens=[args.max_new_tokens],
        duration_s=None if args.requests else args.duration,
        requests_per_step=args.requests or None,
        warmup_requests=1,
        request_timeout_s=args.request_timeout,
        prompts="same",
        out=out,
    )
    try:
        summary = run_sweep(cfg, progress=lambda line: print(f"    {line}", flush=True))[0]
    except SweepError as exc:
        print(f"    the sweep stopped: {exc}", flush=True)
        summary = None
    server_requests = settle(url) - before
    sampler.stop()
    rss_end = sampler.rss()
    trimmed = trimmed_rss(url, sampler) if args.trim else None
    anon = sampler.anon()
    traced, sites = grown_sites(url)
    records, _ = read_records(out / "requests.jsonl")
    own, _ = read_records(out / OWN_REQUESTS_FILE)  # warm-up and probes: the server counts them too
    by_status = Counter(status_label(r) for r in records)
    return Repeat(
        index=index,
        requests=len(records),
        by_status={k: v for k, v in sorted(by_status.items()) if v},
        server_requests=server_requests,
        missing=max(0, server_requests - int(arrived(records) + arrived(own))),
        loadgen_cpu=summary.loadgen_cpu if summary else None,
        output_tok_s=summary.output_tok_s if summary else 0.0,
        rss_start_mib=rss_start / MIB,
        rss_peak_mib=max(sampler.peak, rss_end) / MIB,
        rss_end_mib=rss_end / MIB,
        rss_trimmed_mib=trimmed / MIB if trimmed is not None else None,
        anon_settled_mib=anon / MIB if anon is not None else None,
        traced_mib=traced,
        top_growth=sites,
    )


def repeat_line(r: Repeat, total: int) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in r.by_status.items())
    trimmed = f", trimmed {r.rss_trimmed_mib:.0f}" if r.rss_trimmed_mib is not None else ""
    anon = f" (anonymous {r.anon_settled_mib:.0f})" if r.anon_settled_mib is not None else ""
    traced = f"; traced Python {r.traced_mib:.1f} MiB" if r.traced_mib is not None else ""
    return (
        f"  repetition {r.index}/{total}: {r.requests} requests ({statuses}), server {r.server_requests}, "
        f"missing {r.missing}; RSS MiB start {r.rss_start_mib:.0f}, peak {r.rss_peak_mib:.0f}, "
        f"end {r.rss_end_mib:.0f}{trimmed}{anon}{traced}"
    )


def soak_mode(group: ProcessGroup, args: argparse.Namespace, mode: str, out: Path) -> SoakResult:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_args = [
        "--batching",
        mode,
        "--max-concurrent-requests",
        str(args.max_concurrent_requests),
        "--max-batch-size",
        str(args.max_batch_size),
        "--debug-memory",
        *(["--tracemalloc", str(args.tracemalloc)] if args.tracemalloc else []),
        *shlex.split(args.server_args),
    ]
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    cmd = fastapi_llama_command(args.model_id, port, *server_args)
    server = group.start_ready(f"fastapi-llama-{mode}", cmd, f"{url}/health", env={**tiny_model_env(), **server_env})
    fresh_request(url)  # warm-up: the first request pays for lazy set-up
    grown_sites(url)  # the baseline the first repetition's sites are compared with
    length = f"{args.requests} requests" if args.requests else f"{args.duration:.0f}s"
    print(
        f"{mode}: {args.repeats} x {args.users} users x {args.max_new_tokens} tokens for {length} on {url} "
        f"({shlex.join(server_args[2:])}{' ' if server_env else ''}{shlex.join(args.server_env)})",
        flush=True,
    )
    repeats: list[Repeat] = []
    for index in range(1, args.repeats + 1):
        repeat = run_repeat(args, mode, url, server.proc.pid, index, out / mode / str(index))
        repeats.append(repeat)
        print(repeat_line(repeat, args.repeats), flush=True)
        for s in repeat.top_growth:
            print(f"    grew: {short_site(s.site)} {s.size_diff_kib:+,.0f} KiB ({s.count_diff:+,} blocks)", flush=True)
    growth = judge([r.settled_mib for r in repeats], args.leak_bound_mib)
    healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
    return SoakResult(
        mode=mode,
        users=args.users,
        max_new_tokens=args.max_new_tokens,
        duration_s=None if args.requests else args.duration,
        requests_per_repeat=args.requests or None,
        server_args=server_args,
        server_env=server_env,
        repeats=repeats,
        leak_suspected=growth.leak_suspected,
        leak_bound_mib=args.leak_bound_mib,
        growth_mib=growth.deltas_mib,
        healthy_after=healthy,
        fresh_request_s=fresh_request(url),
    )


def verdict_line(r: SoakResult) -> str:
    """One line per mode: passed or not, and why."""
    ends = " -> ".join(f"{x.settled_mib:.0f}" for x in r.repeats)
    last = r.repeats[-1] if r.repeats else None
    basis = "trimmed " if last and last.rss_trimmed_mib is not None else ""
    basis += "anonymous memory" if last and last.anon_settled_mib is not None else "RSS"
    growth = ", ".join(f"{d:+.1f}" for d in r.growth_mib) or "-"
    if r.leak_suspected:
        memory = f"LEAK SUSPECTED (every repetition grew > {r.leak_bound_mib:.0f} MiB)"
    elif r.leak_suspected is None:
        memory = "not judged (one repetition)"
    else:
        memory = f"no leak (not every repetition grew > {r.leak_bound_mib:.0f} MiB)"
    requests = sum(x.requests for x in r.repeats)
    after = "healthy after" if r.healthy_after and r.fresh_request_s is not None else "NOT healthy after"
    return (
        f"{r.mode}: {'PASS' if r.passed else 'FAIL'} - {memory}; {basis} at each end {ends} MiB ({growth}); "
        f"{requests} requests, {r.missing} missing; {after}"
    )


def write_results(path: Path, results: list[SoakResult]) -> None:
    def as_json(r: SoakResult) -> dict[str, Any]:
        return {**asdict(r), "missing": r.missing, "passed": r.passed}

    path.write_text(json.dumps([as_json(r) for r in results], indent=2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-id", default=".cache/models/tiny-llama")
    p.add_argument("--modes", default="naive,static,continuous")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="repetitions of the load per mode, against one server")
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of load per repetition; the admitted requests then finish or time out (--request-timeout)",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=0,
        help="finished requests per repetition instead of --duration (0: by duration); a load of fixed size",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=45.0,
        help="long enough for continuous mode's first batch of 64 x 256 tokens on 2 cores",
    )
    p.add_argument("--max-concurrent-requests", type=int, default=128, help="TGI's default admission limit")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument(
        "--leak-bound-mib",
        type=float,
        default=16.0,
        help="a leak is suspected when every repetition after the first ends more than this above the previous",
    )
    p.add_argument(
        "--trim",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each repetition, the server hands its allocator's free pages back to the OS (malloc_trim(0), or "
        "jemalloc's purge); the leak rule reads the memory that is left",
    )
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=1,
        metavar="FRAMES",
        help="the server traces Python allocations (fastapi-llama --tracemalloc); the soak prints the sites that "
        "grew most in each repetition. 0: off",
    )
    p.add_argument("--server-args", default="", help="more fastapi-llama flags, e.g. --debug-leak-requests")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the server, repeatable: MALLOC_ARENA_MAX=2, LD_PRELOAD=.../libjemalloc.so.2",
    )
    p.add_argument("--results", type=Path, default=Path("results/soak"))
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.repeats < 2:
        p.error("--repeats must be at least 2: the leak rule compares repetitions")
    if bad := [kv for kv in args.server_env if "=" not in kv]:
        p.error(f"--server-env takes KEY=VALUE: {', '.join(bad)}")
    return args


def main() -> None:
    args = parse_args()
    out = args.results / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    group = ProcessGroup(out)
    results: list[SoakResult] = []
    try:
        with interruptible(group):
            for mode in args.modes.split(","):
                results.append(soak_mode(group, args, mode, out))
                write_results(out / "soak.json", results)
                group.stop()  # one server at a time: each mode gets the machine to itself
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished modes are in {out}/soak.json", file=sys.stderr)
        sys.exit(130)
    print()
    for r in results:
        print(verdict_line(r))
    print(f"results: {out}/soak.json")
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
