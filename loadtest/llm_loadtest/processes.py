"""Processes the kit starts: their command lines, and one way to start, await, watch and stop them.

Local mode, the sweep, the benchmarks and the tests all go through here, so a server is started the same way
whoever starts it, a readiness wait that gives up shows the process's log, and nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOCUSTFILE = Path(__file__).resolve().parents[1] / "locustfile.py"
VENV_BIN = Path(sys.executable).parent
LOG_TAIL_LINES = 20

# vLLM's CPU KV cache, GiB: 131,072 tokens of the tiny model, far more than 300 users x 512 need.
VLLM_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def tiny_model_env() -> dict[str, str]:
    """The environment of a fastapi-llama started on this machine's CPU (local mode, benchmarks, tests).

    One torch thread unless OMP_NUM_THREADS says otherwise: torch's OpenMP threads spin at each barrier, so with
    two of them and another busy process on one of two cores, 200 steps of the tiny model took 3.75 s instead of
    1.0 s (one thread: 1.2 s either way). Several servers and Locust share the cores in local mode and tests."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


class StartError(RuntimeError):
    """A process exited or did not become ready; the message ends with its log's last lines."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n  ".join(tail) or "(empty log)"


# Command lines.


def fastapi_llama_command(
    model: str | Path,
    port: int,
    *extra: str,
    host: str = "127.0.0.1",
) -> list[str]:
    """`fastapi-llama` as a user starts it, from the same venv as this process (`extra`: its other flags, e.g.
    `--batching continuous`)."""
    return [str(VENV_BIN / "fastapi-llama"), "--model-id", str(model), "--hostname", host, "--port", str(port), *extra]


def vllm_python() -> Path:
    # absolute(), not resolve(): a venv's python is a symlink, and resolving it leaves the venv.
    return Path(os.environ.get("VLLM_PYTHON", ".cache/vllm-venv/bin/python")).absolute()


def vllm_command(model: str | Path, port: int, max_users: int, python: Path | None = None) -> list[str]:
    """vLLM's OpenAI server from its own venv (default: VLLM_PYTHON), on the tiny model in float32 on the CPU."""
    python = python or vllm_python()
    if not python.exists():
        raise StartError(f"vLLM is not installed ({python} is missing): run make vllm-cpu")
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",  # the `vllm` console script fails in the vllm-cpu package
        "--model",
        str(model),
        "--served-model-name",
        Path(model).name,
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enforce-eager",  # no graph capture on the CPU: starts in seconds
        "--max-num-seqs",
        str(max(256, max_users)),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def locust_command(host: str, *args: str, records_file: Path | None = None, headless: bool = True) -> list[str]:
    """Locust on the kit's locustfile, in its own interpreter (its gevent patching must come first)."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host]
    if headless:
        cmd.append("--headless")
    if records_file is not None:
        cmd += ["--records-file", str(records_file)]
    return [*cmd, *args]


def synthetic_server_command(
    port: int,
    ttft_ms: float,
    gap_ms: float,
    tokens: int,
    behavior: str = "ok",
    log: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The known-timing synthetic server (llm_loadtest.synthetic_server), logging what it sent to `log`; `extra`:
    its other flags (`--slow-above N`, `--metrics-skip-every K`)."""
    cmd = [sys.executable, "-m", "llm_loadtest.synthetic_server", "--port", str(port), "--ttft-ms", str(ttft_ms)]
    cmd += ["--gap-ms", str(gap_ms), "--tokens", str(tokens), "--behavior", behavior]
    return cmd + (["--log", str(log)] if log is not None else []) + list(extra)


# Running them.


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(url: str, proc: subprocess.Popen, name: str, log: Path, timeout: float = 180) -> None:
    """Until `url` answers 200. Fails at once if the process exits, and with its log if the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(f"{name} exited ({proc.returncode}); last lines of {log}:\n  {log_tail(log)}")
        if http_ok(url):
            return
        time.sleep(0.1)
    raise StartError(f"{name} not ready at {url} after {timeout:.0f}s; last lines of {log}:\n  {log_tail(log)}")


def _signal(proc: subprocess.Popen, sig: int) -> None:
    """To the process's group when it leads one (started in its own session: its children too), else to it."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def stop_process(proc: subprocess.Popen, timeout: float = 15, sig: int = signal.SIGTERM) -> None:
    """`sig` (SIGTERM by default), then SIGKILL after `timeout`."""
    if proc.poll() is None:
        _signal(proc, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


@dataclass
class Started:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class ProcessGroup:
    """Processes started for a run, each in its own session and logging to `logs/NAME.log`; stopped in reverse
    order however the run ends."""

    logs: Path
    started: list[Started] = field(default_factory=list)
    stop_timeout: float = 15.0

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Started:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        item = Started(name, proc, log)
        self.started.append(item)
        return item

    def start_ready(
        self, name: str, cmd: list[str], ready_url: str, timeout: float = 180, env: dict[str, str] | None = None
    ) -> Started:
        item = self.start(name, cmd, env)
        wait_ready(ready_url, item.proc, name, item.log, timeout)
        return item

    def dead(self) -> list[str]:
        return [s.name for s in self.started if s.proc.poll() is not None]

    def stop(self) -> None:
        for s in reversed(self.started):
            if s.proc.poll() is None:
                _signal(s.proc, signal.SIGTERM)
        for s in reversed(self.started):
            stop_process(s.proc, self.stop_timeout)
        self.started.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Finished:
    """How a bounded run ended: its exit code (-1: stopped at its deadline), wall seconds, and the CPU seconds of
    its processes per process (a share of one core each, once divided by the wall time)."""

    code: int
    wall_s: float
    cpu_s_per_process: float

    @property
    def cpu_share(self) -> float | None:
        return self.cpu_s_per_process / self.wall_s if self.wall_s > 0 else None


def run_bounded(cmd: list[str], log: Path, deadline_s: float, env: dict[str, str] | None = None) -> Finished:
    """Run `cmd` to its end, sampling its CPU time; stopped (SIGTERM, then SIGKILL) at `deadline_s`. It stays in
    the caller's process group, so whatever stops the caller's group (Ctrl-C in a terminal, a kill of the group)
    stops it too; an exception in the caller (KeyboardInterrupt, a SIGTERM turned into one) stops it as well."""
    t0 = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        ps = psutil.Process(proc.pid)
        cpu: dict[int, float] = {}
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for p in [ps, *ps.children(recursive=True)]:
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
            if time.monotonic() - t0 > deadline_s:
                stop_process(proc, 30)
                return Finished(-1, time.monotonic() - t0, sum(cpu.values()) / max(1, len(cpu)))
            time.sleep(0.25)
        return Finished(proc.returncode, time.monotonic() - t0, sum(cpu.values()) / max(1, len(cpu)))
    except BaseException:
        stop_process(proc, 30)
        raise
