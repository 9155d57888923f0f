"""The service's image: CUDA-capable base, non-root, a health check on /health, no secrets."""

from __future__ import annotations

import re
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[3] / "services" / "fastapi_llama"


def _instructions() -> list[tuple[str, str]]:
    text = (SERVICE / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(maxsplit=1)[0].upper(), ln.split(maxsplit=1)[1]) for ln in lines]


def test_base_image_has_cuda():
    """The base is a build argument (the stack test builds on an offline one) whose default is a pinned CUDA image."""
    assert next(arg for op, arg in _instructions() if op == "FROM") == "${BASE_IMAGE}"
    base = next(arg for op, arg in _instructions() if op == "ARG" and arg.startswith("BASE_IMAGE="))
    assert "cuda" in base and ":" in base and "latest" not in base


def test_runs_as_non_root():
    users = [arg for op, arg in _instructions() if op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_healthcheck_hits_health():
    checks = [arg for op, arg in _instructions() if op == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0]


def test_no_token_baked_in():
    for op, arg in _instructions():
        if op in ("ENV", "ARG"):
            assert not re.search(r"HF_TOKEN|HUGGING_FACE_HUB_TOKEN", arg), arg


def test_requirements_are_pinned():
    reqs = [ln for ln in (SERVICE / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert reqs and all("==" in r for r in reqs)
