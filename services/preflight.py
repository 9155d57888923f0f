"""Checks what `make up` needs before it starts anything: Docker Compose v2, a Grafana admin password, and the
NVIDIA runtime where the stack as rendered reserves GPUs. One clear line per problem; exit 1 if any. Standard
library and the docker CLI only: `make up` runs it with the system's python3, before any venv exists."""

from __future__ import annotations

import json
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


def wants_gpus(profiles: list[str]) -> bool | str:
    """Whether the stack as Compose renders it (with COMPOSE_FILE's overrides) reserves NVIDIA devices; a string is
    why it could not be rendered."""
    args = ["docker", "compose", *(a for p in profiles for a in ("--profile", p)), "config", "--format", "json"]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        return f"docker compose cannot render the stack: {run.stderr.strip()}"
    services = json.loads(run.stdout).get("services", {})
    return any(
        device.get("driver") == "nvidia"
        for service in services.values()
        for device in (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
            "devices", []
        )
    )


def nvidia_runtime() -> str | None:
    # The docker CLI, not the Python SDK: `make up` needs no venv.
    run = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    if run.returncode != 0:
        return f"cannot reach the Docker engine: {run.stderr.strip() or run.stdout.strip()}"
    if "nvidia" not in json.loads(run.stdout or "{}"):
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
    profiles = [p for p in os.environ.get("PROFILES", "gpu").split(",") if p]
    problems = [p for p in (compose_v2(), grafana_password(Path(".env"))) if p]
    if not problems:
        gpus = wants_gpus(profiles)
        if isinstance(gpus, str):
            problems.append(gpus)
        elif gpus:
            problems += [p for p in (nvidia_runtime(),) if p]
    for p in problems:
        print(f"make up: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
