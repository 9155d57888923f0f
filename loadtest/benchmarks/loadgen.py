"""Load-generator capacity: the streamed tokens/s one Locust process sustains while its TTFT error stays < 2 ms.

Starts the synthetic server (tests/support/synthetic_server.py: 50 ms TTFT, known gaps), runs one Locust process
at growing concurrency, and for each step compares each request's measured TTFT with the time the server logged
sending its first token (same clock). Prints tokens/s, the TTFT error p50/p95, the Locust process's CPU, and the
highest tokens/s whose TTFT error p50 stayed under 2 ms. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "loadtest"))

from llm_loadtest.records import read_records  # noqa: E402
from tests.support.loadgen import synthetic_server  # noqa: E402

LOCUSTFILE = REPO / "loadtest" / "locustfile.py"


def run_step(url: str, users: int, seconds: int, tokens: int, work: Path) -> tuple[list, float]:
    records = work / f"r{users}.jsonl"
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--max-new-tokens",
        str(tokens),
        "--records-file",
        str(records),
        "--stop-timeout",
        "10s",
        "--loglevel",
        "ERROR",
        "--only-summary",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    cpu = 0.0
    t0 = time.monotonic()
    while proc.poll() is None:
        try:
            t = ps.cpu_times()
            cpu = t.user + t.system
        except psutil.Error:
            pass
        time.sleep(0.25)
    return read_records(records)[0], cpu / (time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="16,64,128,256")
    p.add_argument("--gap-ms", type=float, default=5.0)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--seconds", type=int, default=8)
    a = p.parse_args()
    print(f"synthetic server: 50 ms TTFT, {a.gap_ms:g} ms gaps, {a.tokens} tokens; one Locust process")
    print(f"{'users':>6}{'tok/s':>10}{'TTFT err p50':>14}{'p95':>9}{'ITL p50':>10}{'locust CPU':>12}")
    best = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = work / "server.jsonl"
        with synthetic_server(50, a.gap_ms, a.tokens, log=log) as url:
            for users in [int(u) for u in a.users.split(",")]:
                records, cpu = run_step(url, users, a.seconds, a.tokens, work)
                truth = {e["request_id"]: e for e in map(json.loads, log.read_text().splitlines())}
                ok = [r for r in records if r.ok and r.request_id in truth]
                if not ok:
                    print(f"{users:>6}  no successful requests")
                    continue
                wall = max(r.start + r.e2e_s for r in ok) - min(r.start for r in ok)
                tok_s = sum(r.output_tokens for r in ok) / wall
                err = np.array([r.ttft_s - (truth[r.request_id]["sent"][0] - r.start) for r in ok]) * 1000
                itl = np.percentile([r.itl_s for r in ok], 50) * 1000
                p50, p95 = np.percentile(np.abs(err), [50, 95])
                print(f"{users:>6}{tok_s:>10.0f}{p50:>12.2f}ms{p95:>7.2f}ms{itl:>8.2f}ms{cpu:>11.0%}", flush=True)
                if p50 < 2:
                    best = max(best, tok_s)
    print(f"\ncapacity: {best:.0f} streamed tok/s in one Locust process with TTFT error p50 < 2 ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
