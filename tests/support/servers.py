"""Start real servers on 127.0.0.1 for the tests, and stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from llm_loadtest.local import VLLM_ENV, free_port, vllm_command

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def tiny_model_path() -> Path:
    return Path(os.environ.get("TINY_MODEL", REPO / ".cache/models/tiny-llama")).resolve()


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_healthy(url: str, process: subprocess.Popen, timeout: float, log_path: Path, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout}s:\n{log_path.read_text()[-3000:]}")


@contextmanager
def running(
    cmd: list[str],
    url: str,
    log_path: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    ready_path: str = "/health",
    stop_timeout: float = 10,
) -> Iterator[RunningServer]:
    """Start `cmd` in its own session, logging to `log_path`; yield once `url + ready_path` answers 200; stop it
    however the block ends."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    try:
        wait_healthy(url, process, timeout, log_path, ready_path)
        yield RunningServer(url, process, log_path)
    finally:
        stop(process, timeout=stop_timeout)


@contextmanager
def fastapi_llama(tmp_dir: Path, *extra_args: str, timeout: float = 60) -> Iterator[RunningServer]:
    """`fastapi-llama` on the tiny model, as a user starts it, on a free loopback port."""
    port = free_port()
    cmd = [
        str(VENV_BIN / "fastapi-llama"),
        "--model-id",
        str(tiny_model_path()),
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with running(cmd, f"http://127.0.0.1:{port}", tmp_dir / f"fastapi-llama-{port}.log", timeout, env) as server:
        yield server


def vllm_python() -> Path:
    # absolute(), not resolve(): the venv's python is a symlink, and resolving it leaves the venv.
    return Path(os.environ.get("VLLM_PYTHON", REPO / ".cache/vllm-venv/bin/python")).absolute()


@contextmanager
def vllm_server(tmp_dir: Path, timeout: float = 300) -> Iterator[RunningServer]:
    """vLLM's CPU build on the tiny model, started as local mode starts it (40-60 s here)."""
    port = free_port()
    cmd = vllm_command(str(tiny_model_path()), port, 64, vllm_python())
    url, log_path = f"http://127.0.0.1:{port}", tmp_dir / f"vllm-{port}.log"
    with running(cmd, url, log_path, timeout, VLLM_ENV, stop_timeout=30) as server:
        yield server


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop a process started in its own session, with its children."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
