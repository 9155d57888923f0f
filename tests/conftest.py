from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.servers import RunningServer, fastapi_llama, tiny_model_path

REQUIRE_BINARIES = os.environ.get("LLMKIT_REQUIRE_SYSTEM_BINARIES") == "1"
# Before any test imports torch: the in-process engine tests run in this process (make test sets it too).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def missing(message: str) -> NoReturn:
    """Something a test needs is not installed: skip, or fail where CI demands it (LLMKIT_REQUIRE_SYSTEM_BINARIES)."""
    if REQUIRE_BINARIES:
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str) -> str:
    """The path of a system binary, or `missing`."""
    path = shutil.which(name)
    if path is None:
        missing(f"needs the system binary `{name}` (make system-deps)")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    path = tiny_model_path()
    if not (path / "config.json").exists():
        pytest.fail(f"tiny model missing at {path}: run `make tiny-model` (make test does)")
    return path


@pytest.fixture(scope="session")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def naive_server(tiny_model: Path, server_tmp: Path) -> Iterator[RunningServer]:
    """One naive server shared by the tests that do not need special limits."""
    with fastapi_llama(
        server_tmp, "--max-input-tokens", "64", "--max-total-tokens", "1024", "--max-concurrent-requests", "16"
    ) as server:
        yield server
