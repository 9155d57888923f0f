"""Checks what `make up` needs before it starts anything: Docker Compose v2, the NVIDIA runtime for GPU profiles,
and a Grafana admin password. One clear line per problem; exit 1 if any."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def compose_v2() -> str | None:
    if shutil.which("docker") is None:
        return "Docker is not installed (https://docs.docker.com/engine/install/)"
    run = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if run.returncode != 0:
        return "Docker Compose v2 is missing: `docker compose` must work (the plugin, not docker-compose 1.x)"
    if not re.match(r"v?2\.", run.stdout.strip()):
        return f"Docker Compose v2 is required, found {run.stdout.strip()}"
    return None


def nvidia_runtime() -> str | None:
    try:
        import docker
    except ImportError:
        return "the `docker` Python SDK is missing (make install provides it)"
    try:
        info = docker.from_env().info()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine is the message
        return f"cannot reach the Docker engine: {exc}"
    if "nvidia" not in (info.get("Runtimes") or {}):
        return (
            "the NVIDIA container runtime is not configured: install nvidia-container-toolkit and run "
            "`sudo nvidia-ctk runtime configure --runtime=docker`, or use PROFILES=cpu"
        )
    return None


def grafana_password(env_file: Path) -> str | None:
    value = os.environ.get("GRAFANA_ADMIN_PASSWORD")
    if value is None and env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("GRAFANA_ADMIN_PASSWORD="):
                value = line.split("=", 1)[1].strip()
    if not value:
        return "GRAFANA_ADMIN_PASSWORD is not set: `cp .env.example .env` and choose one (there is no default)"
    if value in ("admin", "password", "changeme"):
        return "GRAFANA_ADMIN_PASSWORD is a well-known default; choose another"
    return None


def main() -> None:
    profiles = os.environ.get("PROFILES", "gpu").split(",")
    problems = [p for p in (compose_v2(), grafana_password(Path(".env"))) if p]
    if any(p in ("gpu", "vllm") for p in profiles) and not problems:
        problems += [p for p in (nvidia_runtime(),) if p]
    for p in problems:
        print(f"make up: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
