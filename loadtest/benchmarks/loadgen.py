"""Load-generator capacity: the streamed tokens/s one Locust process sustains while its TTFT error stays < 2 ms.

Starts the known-timing synthetic server (llm_loadtest.synthetic_server: 50 ms TTFT, known gaps), runs one Locust
process at growing concurrency, and for each step compares each request's measured TTFT with the time the server
logged sending its first token (same clock). Prints tokens/s (the step's summary, as a sweep derives it), the TTFT
error p50/p95, the Locust process's CPU, and the highest tokens/s whose TTFT error p50 stayed under 2 ms.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llm_loadtest.processes import ProcessGroup, free_port, locust_command, run_bounded, synthetic_server_command
from llm_loadtest.records import RequestRecord, read_records
from llm_loadtest.results import derive


def run_step(url: str, users: int, seconds: int, tokens: int, work: Path) -> tuple[list[RequestRecord], float | None]:
    """One headless Locust run; its records and its CPU (a share of one core)."""
    records = work / f"r{users}.jsonl"
    cmd = locust_command(
        url,
        *("-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--max-new-tokens", str(tokens)),
        *("--stop-timeout", "10s", "--loglevel", "ERROR", "--only-summary"),
        records_file=records,
    )
    done = run_bounded(cmd, work / "locust.log", deadline_s=seconds + 60)
    return read_records(records)[0], done.cpu_share


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
    with tempfile.TemporaryDirectory() as tmp, ProcessGroup(Path(tmp)) as group:
        work = Path(tmp)
        log = work / "server.jsonl"
        port = free_port()
        server = synthetic_server_command(port, 50, a.gap_ms, a.tokens, log=log)
        url = f"http://127.0.0.1:{port}"
        group.start_ready("synthetic-server", server, f"{url}/health", timeout=30)
        for users in [int(u) for u in a.users.split(",")]:
            records, cpu = run_step(url, users, a.seconds, a.tokens, work)
            truth = {e["request_id"]: e for e in map(json.loads, log.read_text().splitlines())}
            ok = [r for r in records if r.ok and r.request_id in truth]
            if not ok:
                print(f"{users:>6}  no successful requests")
                continue
            s = derive(ok, None)[0]
            err = np.array([r.ttft_s - (truth[r.request_id]["sent"][0] - r.start) for r in ok]) * 1000
            p50, p95 = np.percentile(np.abs(err), [50, 95])
            cpu_text = f"{cpu:.0%}" if cpu is not None else "-"
            print(
                f"{users:>6}{s.output_tok_s:>10.0f}{p50:>12.2f}ms{p95:>7.2f}ms{(s.itl_p50_s or 0) * 1000:>8.2f}ms"
                f"{cpu_text:>11}",
                flush=True,
            )
            if p50 < 2:
                best = max(best, s.output_tok_s)
    print(f"\ncapacity: {best:.0f} streamed tok/s in one Locust process with TTFT error p50 < 2 ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
