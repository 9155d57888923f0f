"""The memory debug routes a soak reads (--debug-memory, --tracemalloc): absent unless asked for and never in the
OpenAPI document; resident memory, the allocation sites that grew between two calls, malloc_trim."""

from __future__ import annotations

import platform
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fastapi_llama.app import create_app
from fastapi_llama.memory import MemoryProbe, rss_bytes
from fastapi_llama.metrics import ServerMetrics
from fastapi_llama.service import Service
from fastapi_llama.settings import Settings
from tests.services.fastapi_llama.fake_engine import FakeEngine

SETTINGS = Settings(model_id="test/fake-model")
GLIBC = platform.libc_ver()[0] == "glibc"


def client_for(settings: Settings, tokenizer: Any) -> TestClient:
    engine = FakeEngine(tokenizer, [5, 6, 7])
    engine.start()
    return TestClient(create_app(Service(settings, engine, tokenizer, ServerMetrics())))


@pytest.fixture
def traced() -> Iterator[None]:
    """tracemalloc on for one test, as `--tracemalloc 1` turns it on after start-up."""
    assert not tracemalloc.is_tracing()
    tracemalloc.start(1)
    try:
        yield
    finally:
        tracemalloc.stop()


def test_the_routes_are_off_by_default_and_never_in_the_openapi_document(tiny_tokenizer):
    with client_for(SETTINGS, tiny_tokenizer) as client:
        assert client.get("/debug/memory").status_code == 404
        assert client.post("/debug/memory/trim").status_code == 404
    with client_for(replace(SETTINGS, debug_memory=True), tiny_tokenizer) as client:
        assert client.get("/debug/memory").status_code == 200
        assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/debug")]


def test_memory_reports_resident_memory_untraced(tiny_tokenizer):
    with client_for(replace(SETTINGS, debug_memory=True), tiny_tokenizer) as client:
        body = client.get("/debug/memory").json()
    assert body["tracing"] is False and body["top_growth"] == [] and body["traced_bytes"] is None
    assert body["rss_bytes"] > 10 * 2**20  # this interpreter, with torch imported


class Hoard:
    """Allocations that stay alive between two reports, from one known line."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def grow(self, n: int) -> None:
        for i in range(n):
            self.items.append(b"x" * 1000 + i.to_bytes(4, "little"))  # the growing site


def test_memory_names_the_sites_that_grew_since_the_previous_call(tiny_tokenizer, traced):
    hoard = Hoard()
    with client_for(replace(SETTINGS, tracemalloc=1), tiny_tokenizer) as client:
        client.get("/debug/memory")  # the baseline
        hoard.grow(2000)
        first = client.get("/debug/memory", params={"top": 3}).json()
        hoard.grow(1000)
        second = client.get("/debug/memory", params={"top": 3}).json()
        unchanged = client.get("/debug/memory", params={"top": 3}).json()
    assert first["tracing"] and first["traced_bytes"] > 2_000_000
    top = first["top_growth"][0]
    assert top["site"].endswith("test_debug_memory.py:" + str(Hoard.grow.__code__.co_firstlineno + 2)), top
    # 2000 byte strings (and the list's array, which grows on the same line)
    assert top["count_diff"] in (2000, 2001) and 2000 * 1000 < top["size_diff_bytes"] < 2000 * 1100
    assert second["top_growth"][0]["count_diff"] in (1000, 1001)  # since the previous call, not since the start
    assert second["top_growth"][0]["count"] in (3000, 3001)
    assert len(first["top_growth"]) <= 3
    assert not any("test_debug_memory.py" in s["site"] for s in unchanged["top_growth"])


def test_the_probe_ignores_tracemalloc_s_own_memory(traced):
    probe = MemoryProbe()
    probe.report()
    report = probe.report(top=100)  # keeping the previous snapshot is the probe's own allocation
    assert not any(s.site.startswith(tracemalloc.__file__) for s in report.top_growth)


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_gives_freed_heap_pages_back(tiny_tokenizer):
    with client_for(replace(SETTINGS, debug_memory=True), tiny_tokenizer) as client:
        # 64 MiB in small blocks under the mmap threshold, so they come from the heap; freed, glibc keeps them
        # (at most the top of the heap goes back at once, and only above M_TRIM_THRESHOLD).
        blocks = [bytearray(64 * 1024 - 64) for _ in range(1024)]
        keep = blocks[::64]  # a few stay alive, pinning the top of the heap
        del blocks
        held = rss_bytes()
        body = client.post("/debug/memory/trim").json()
        del keep
    assert body["released"] is True
    assert body["rss_after_bytes"] < body["rss_before_bytes"] - 16 * 2**20, body
    assert abs(body["rss_before_bytes"] - held) < 16 * 2**20
