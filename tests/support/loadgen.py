"""Run the synthetic server and real Locust processes for the load-tester tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import REPO, VENV_BIN, free_port, stop

LOCUSTFILE = REPO / "loadtest" / "locustfile.py"


def start_synthetic_server(
    port: int,
    ttft_ms: float = 50,
    gap_ms: float = 10,
    tokens: int = 64,
    behavior: str = "ok",
    log: Path | None = None,
) -> subprocess.Popen:
    """Start the synthetic server on `port` and wait until it answers (a fault test may kill and restart it)."""
    cmd = [
        sys.executable,
        "-m",
        "tests.support.synthetic_server",
        "--port",
        str(port),
        "--ttft-ms",
        str(ttft_ms),
        "--gap-ms",
        str(gap_ms),
        "--tokens",
        str(tokens),
        "--behavior",
        behavior,
    ]
    if log is not None:
        cmd += ["--log", str(log)]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc


@contextmanager
def synthetic_server(
    ttft_ms: float = 50, gap_ms: float = 10, tokens: int = 64, behavior: str = "ok", log: Path | None = None
) -> Iterator[str]:
    port = free_port()
    proc = start_synthetic_server(port, ttft_ms, gap_ms, tokens, behavior, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def run_locust(host: str, records: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A headless Locust run, as a user starts it; bounded in time by -t or --max-requests in args."""
    cmd = [
        str(VENV_BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--records-file",
        str(records),
        "--loglevel",
        "WARNING",
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
