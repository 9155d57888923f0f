from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import missing
from tests.stack.engine import docker_engine, require_compose_v2
from tests.stack.stack import RESULTS_UID, Stack
from tests.support.servers import REPO

BUILD_BASES_TIMEOUT_S = 900


def build_bases() -> str:
    """The offline base images (build-bases.sh); their tag."""
    if os.geteuid() != 0:
        missing("needs root to build the offline base images (debootstrap, chroot)")
    if shutil.which("debootstrap") is None:
        missing("needs the system binary `debootstrap` (make system-deps)")
    t0 = time.monotonic()
    run = subprocess.run(
        ["tests/stack/build-bases.sh"], cwd=REPO, capture_output=True, text=True, timeout=BUILD_BASES_TIMEOUT_S
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"\n{run.stdout.strip()} in {time.monotonic() - t0:.0f}s")
    return "latest"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("docker")
    with docker_engine(logs):
        print(f"\nDocker Compose {require_compose_v2()}")
        tag = build_bases()
        results = tmp_path_factory.mktemp("stack") / "results"
        # What `mkdir -p results` gives a user who runs make up: a folder only they can write.
        results.mkdir(mode=0o755)
        os.chown(results, RESULTS_UID, RESULTS_UID)
        results.parent.chmod(0o755)
        s = Stack(results, tag)
        try:
            yield s
        finally:
            s.compose("down", "--volumes", "--remove-orphans", timeout=180)
