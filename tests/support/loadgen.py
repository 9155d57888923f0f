"""Run the synthetic server and real Locust processes for the load-tester tests."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from llm_loadtest.processes import LOCUSTFILE, locust_command, synthetic_server_command, wait_ready
from tests.support.servers import REPO, free_port, stop

__all__ = ["LOCUSTFILE", "run_locust", "start_synthetic_server", "synthetic_server"]


def start_synthetic_server(
    port: int,
    ttft_ms: float = 50,
    gap_ms: float = 10,
    tokens: int = 64,
    behavior: str = "ok",
    log: Path | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen:
    """Start the synthetic server on `port` and wait until it answers (a fault test may kill and restart it);
    fails with its output if it does not."""
    cmd = synthetic_server_command(port, ttft_ms, gap_ms, tokens, behavior, log, extra)
    out = (log.parent if log else Path(tempfile.gettempdir())) / f"synthetic-{port}.out"
    with open(out, "ab") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, "synthetic server", out, timeout=30)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextmanager
def synthetic_server(
    ttft_ms: float = 50,
    gap_ms: float = 10,
    tokens: int = 64,
    behavior: str = "ok",
    log: Path | None = None,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    port = free_port()
    proc = start_synthetic_server(port, ttft_ms, gap_ms, tokens, behavior, log, extra)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def run_locust(
    host: str, records: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A headless Locust run, as a user starts it; bounded in time by -t or --max-requests in args. `env`: more
    environment variables (Locust reads every flag from a LOCUST_* one)."""
    cmd = locust_command(host, "--loglevel", "WARNING", *args, records_file=records)
    environment = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=environment)
