"""`make up` checks before it starts anything: no Grafana admin password, no stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.servers import REPO

PREFLIGHT = REPO / "services" / "preflight.py"


def preflight(cwd, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    return subprocess.run(
        [sys.executable, str(PREFLIGHT)],
        cwd=cwd,
        env={**base, "PROFILES": "cpu", **env},
        capture_output=True,
        text=True,
    )


def test_no_grafana_password_refuses(tmp_path):
    run = preflight(tmp_path)
    assert run.returncode == 1
    assert "make up: GRAFANA_ADMIN_PASSWORD is not set" in run.stderr and "Traceback" not in run.stderr


def test_well_known_password_refuses(tmp_path):
    (tmp_path / ".env").write_text("GRAFANA_ADMIN_PASSWORD=admin\n")
    assert "well-known default" in preflight(tmp_path).stderr


def docker_on_path(tmp_path, compose_version: str | None) -> str:
    """A PATH whose `docker compose version --short` prints `compose_version` (None: no docker at all), so that
    what the preflight says does not depend on this machine's Docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if compose_version is not None:
        # `docker compose version --short` prints the version; `docker compose ... config` renders no GPU.
        docker = bin_dir / "docker"
        docker.write_text(
            f'#!/bin/sh\ncase "$*" in *config*) echo \'{{"services": {{}}}}\' ;; *) echo {compose_version} ;; esac\n'
        )
        docker.chmod(0o755)
    return str(bin_dir)


def test_a_real_password_passes_that_check(tmp_path):
    (tmp_path / ".env").write_text("GRAFANA_ADMIN_PASSWORD=s3cret-horse-battery\n")
    # With Docker Compose v2 there (and the CPU profile: no GPU runtime needed), nothing is left to refuse...
    run = preflight(tmp_path, PATH=docker_on_path(tmp_path, "v2.29.1"))
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    # ...and without Docker, Docker is the one problem reported: the password check ran and passed.
    run = preflight(tmp_path, PATH=str(tmp_path / "empty"))
    assert run.returncode == 1
    assert run.stderr.splitlines() == ["make up: Docker is not installed (https://docs.docker.com/engine/install/)"]


def test_make_up_runs_the_preflight_before_compose():
    recipe = re.search(r"^up:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1).splitlines()
    assert "preflight.py" in recipe[0] and "up -d" in recipe[2]


def test_the_gpu_runtime_is_checked_only_where_the_rendered_stack_reserves_gpus(tmp_path):
    """The preflight reads the stack as Compose renders it (overrides included) and asks the docker CLI, not the
    Python SDK, for the engine's runtimes."""
    (tmp_path / ".env").write_text("GRAFANA_ADMIN_PASSWORD=s3cret-horse-battery\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gpu = '{"services": {"tgi": {"deploy": {"resources": {"reservations": {"devices": [{"driver": "nvidia"}]}}}}}}'
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        f"case \"$*\" in *config*) echo '{gpu}' ;; info*) echo '{{\"runc\": {{}}}}' ;; *) echo v2.40.3 ;; esac\n"
    )
    (bin_dir / "docker").chmod(0o755)
    run = preflight(tmp_path, PATH=str(bin_dir), PROFILES="gpu")
    assert run.returncode == 1
    assert run.stderr.startswith("make up: the NVIDIA container runtime is not configured"), run.stderr
