"""Flags are named like TGI's launcher and mirrored by TGI's environment variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastapi_llama.settings import parse_settings


def test_flags(monkeypatch):
    s = parse_settings(
        [
            "--model-id",
            "m",
            "--port",
            "9",
            "--max-concurrent-requests",
            "3",
            "--max-input-tokens",
            "10",
            "--max-total-tokens",
            "20",
            "--dtype",
            "bfloat16",
            "--batching",
            "naive",
        ]
    )
    assert (s.model_id, s.port, s.max_concurrent_requests, s.max_input_tokens, s.max_total_tokens, s.dtype) == (
        "m",
        9,
        3,
        10,
        20,
        "bfloat16",
    )


def test_environment_mirrors_flags(monkeypatch):
    for k, v in {
        "MODEL_ID": "env-model",
        "PORT": "8123",
        "MAX_CONCURRENT_REQUESTS": "7",
        "MAX_INPUT_TOKENS": "11",
        "MAX_TOTAL_TOKENS": "22",
        "FASTAPI_LLAMA_HOSTNAME": "0.0.0.0",
        "HOSTNAME": "container-id",
    }.items():
        monkeypatch.setenv(k, v)
    s = parse_settings([])
    assert (s.model_id, s.port, s.max_concurrent_requests, s.max_input_tokens, s.max_total_tokens) == (
        "env-model",
        8123,
        7,
        11,
        22,
    )
    assert s.hostname == "0.0.0.0"  # not the container's HOSTNAME
    assert parse_settings(["--port", "1"]).port == 1  # a flag wins over the environment


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-input-tokens", "50", "--max-total-tokens", "50"],
        ["--max-concurrent-requests", "0"],
        ["--batching", "turbo"],
        ["--tracemalloc", "-1"],
        ["--batching", "continuous", "--debug-leak-requests"],
    ],
)
def test_bad_settings_exit_with_one_line(argv):
    r = subprocess.run([sys.executable, "-m", "fastapi_llama.cli", *argv], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("fastapi-llama:") and "Traceback" not in r.stderr


def test_debugging_flags_are_off_by_default_and_mirrored_by_the_environment(monkeypatch):
    s = parse_settings([])
    assert (s.debug_memory, s.tracemalloc, s.debug_leak_requests, s.debug_memory_routes) == (False, 0, False, False)
    s = parse_settings(["--debug-memory", "--batching", "static", "--debug-leak-requests"])
    assert (s.debug_memory, s.debug_leak_requests, s.debug_memory_routes) == (True, True, True)
    for k, v in {"TRACEMALLOC": "3", "DEBUG_LEAK_REQUESTS": "1"}.items():
        monkeypatch.setenv(k, v)
    s = parse_settings([])
    assert (s.tracemalloc, s.debug_leak_requests, s.debug_memory_routes) == (3, True, True)  # tracing serves them
