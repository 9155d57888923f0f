"""The Docker Engine and Compose v2 the stack test runs on: found, or started (and later stopped) when this
process is root and Debian's dockerd is installed, or `missing` with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import missing

DOCKERD_START_S = 60


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@contextmanager
def docker_engine(log_dir: Path) -> Iterator[None]:
    """Yield with an engine answering `docker info`; stop the dockerd this started, only that one."""
    if shutil.which("docker") is None:
        missing("needs Docker: the docker CLI is not installed (make system-deps installs docker.io)")
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        missing("needs a running Docker Engine, or dockerd and root to start one (make system-deps)")
    log = (log_dir / "dockerd.log").open("wb")
    proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + DOCKERD_START_S
        while not engine_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(log_dir / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def require_compose_v2() -> str:
    run = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    version = run.stdout.strip().lstrip("v")
    if run.returncode != 0 or not version.startswith("2."):
        missing("needs Docker Compose v2 as a CLI plugin (make system-deps: tests/stack/install-compose-v2.sh)")
    return version
