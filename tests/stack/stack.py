"""The kit's Compose stack under the stack test: `make up`, `make ps`, `make down` with the stand-ins override, on
ports of its own, with a results folder owned by an unprivileged user as `make up` run by that user would make it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import REPO, free_port, tiny_model_path

OVERRIDE = "tests/stack/docker-compose.stand-ins.yml"
PROJECT = "llmkit-stack-test"
# Not root, not the locust image's own user (1000): a user whose files only they may write.
RESULTS_UID = 4321
MAKE_TIMEOUT_S = 600


@dataclass
class Service:
    name: str
    state: str
    health: str  # "" where the service has no health check
    exit_code: int | None  # once it has exited


class Stack:
    def __init__(self, results: Path, base_tag: str) -> None:
        self.results = results
        # What one test leaves for a later one on the same stack (tests run in file order).
        self.seen_at: float | None = None
        self.records_before_down: list[str] = []
        self.ports = {name: free_port() for name in ("FASTAPI_PORT", "TGI_PORT", "PROMETHEUS_PORT", "LOCUST_PORT")}
        self.env = {
            **os.environ,
            "COMPOSE_FILE": f"docker-compose.yml:{OVERRIDE}",
            "COMPOSE_PROJECT_NAME": PROJECT,
            "GRAFANA_ADMIN_PASSWORD": "stack-test-only-password",
            "TINY_MODEL": str(tiny_model_path()),
            "STACK_BASE_TAG": base_tag,
            "RESULTS_DIR": str(results),
            "HOST_UID": str(RESULTS_UID),
            "HOST_GID": str(RESULTS_UID),
            **{k: str(v) for k, v in self.ports.items()},
        }

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def make(self, *targets: str, timeout: float = MAKE_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", *targets, "PROFILES=gpu"], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "compose", "--profile", "gpu", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose_inspect(self, service: str, template: str) -> str:
        """`docker inspect --format TEMPLATE` of the service's (first) container."""
        container = self.compose("ps", "-q", service).stdout.split()[0]
        return subprocess.run(
            ["docker", "inspect", "--format", template, container], capture_output=True, text=True, check=True
        ).stdout.strip()

    def services(self) -> list[Service]:
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [Service(r["Service"], r["State"], r.get("Health", ""), r.get("ExitCode")) for r in rows]

    def wait_healthy(self, timeout: float) -> list[Service]:
        """Until every service with a health check is healthy and the rest run (the one-shot model_cache has
        exited 0); fails early on a model_cache that exited otherwise (it is not restarted)."""
        deadline = time.monotonic() + timeout
        while True:
            services = self.services()
            pending = [s for s in services if not self._settled(s)]
            if services and not pending:
                return services
            failed = [s for s in pending if s.name.startswith("model_cache") and s.state == "exited"]
            if failed or time.monotonic() > deadline:
                raise AssertionError(f"not healthy within {timeout:.0f}s: {pending}\n{self.logs()}")
            time.sleep(1)

    def _settled(self, s: Service) -> bool:
        if s.name.startswith("model_cache"):
            return s.state == "exited" and s.exit_code == 0
        return s.state == "running" and s.health in ("", "healthy")

    def logs(self, tail: int = 40) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}").stdout

    def leftovers(self) -> dict[str, list[str]]:
        """Containers and networks of this project that Docker still has."""
        label = f"label=com.docker.compose.project={PROJECT}"
        commands = {
            "container": ["docker", "container", "ls", "--all", "--filter", label, "--format", "{{.Names}}"],
            "network": ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
        }
        return {
            kind: subprocess.run(cmd, capture_output=True, text=True).stdout.split() for kind, cmd in commands.items()
        }
