"""Start real servers on 127.0.0.1 for the tests, and stop them, through the kit's own process module."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llm_loadtest.processes import (
    VENV_BIN,
    VLLM_ENV,
    ProcessGroup,
    fastapi_llama_command,
    free_port,
    stop_process,
    tiny_model_env,
    vllm_command,
    vllm_python,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[2]
__all__ = ["REPO", "VENV_BIN", "RunningServer", "free_port", "running", "stop", "vllm_python"]


def tiny_model_path() -> Path:
    return Path(os.environ.get("TINY_MODEL", REPO / ".cache/models/tiny-llama")).resolve()


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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
    """Start `cmd` in its own session, logging to `log_path`; yield once `url + ready_path` answers 200 (or fail
    with the log's tail); stop it however the block ends."""
    with ProcessGroup(log_path.parent, stop_timeout=stop_timeout) as group:
        server = group.start(log_path.stem, cmd, env, cwd=REPO)
        wait_ready(f"{url}{ready_path}", server.proc, log_path.stem, server.log, timeout)
        yield RunningServer(url, server.proc, server.log)


@contextmanager
def fastapi_llama(tmp_dir: Path, *extra_args: str, timeout: float = 60) -> Iterator[RunningServer]:
    """`fastapi-llama` on the tiny model, as a user starts it, on a free loopback port."""
    port = free_port()
    cmd = fastapi_llama_command(tiny_model_path(), port, *extra_args)
    log = tmp_dir / f"fastapi-llama-{port}.log"
    with running(cmd, f"http://127.0.0.1:{port}", log, timeout, tiny_model_env()) as server:
        yield server


@contextmanager
def vllm_server(tmp_dir: Path, *args: str, timeout: float = 300) -> Iterator[RunningServer]:
    """vLLM's CPU build on the tiny model, started as local mode starts it (40-60 s here); `args` are added to its
    command line (a later flag overrides one local mode sets)."""
    port = free_port()
    cmd = [*vllm_command(tiny_model_path(), port, 64, vllm_python()), *args]
    url, log_path = f"http://127.0.0.1:{port}", tmp_dir / f"vllm-{port}.log"
    with running(cmd, url, log_path, timeout, VLLM_ENV, stop_timeout=30) as server:
        yield server


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop a process started in its own session, with its children."""
    stop_process(process, timeout, sig)
