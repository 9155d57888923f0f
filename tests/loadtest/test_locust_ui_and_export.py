"""Locust's web UI shows the LLM tab and serves the client's view at /metrics; distributed runs count once."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llm_loadtest.processes import locust_command
from llm_loadtest.records import read_records
from tests.support.loadgen import run_locust, synthetic_server
from tests.support.prom import Samples, parse, value
from tests.support.servers import REPO, free_port, stop
from tests.support.waits import wait_until

LABELS = {"target": "synthetic", "api": "tgi", "max_new_tokens": "16", "arrival_rate": ""}  # closed loop


@dataclass
class WebLocust:
    url: str
    server: str  # the synthetic server it loads
    records: Path
    log: Path
    process: subprocess.Popen


def _status(url: str) -> int | str:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _scrape(url: str) -> Samples:
    return parse(httpx.get(f"{url}/metrics", timeout=5).text)[0]


@pytest.fixture
def web_locust(tmp_path) -> Iterator[WebLocust]:
    """Locust with its web UI, started by the test as a user would, and a synthetic server to load; yielded once
    its 3 users run and a few requests have finished."""
    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=16) as url:
        port = free_port()
        cmd = locust_command(
            url,
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(port),
            "--autostart",
            "-u",
            "3",
            "-r",
            "3",
            "--run-time",
            "120s",  # longer than any test needs: the fixture stops it
            "--target-name",
            "synthetic",
            "--max-new-tokens",
            "16",
            records_file=tmp_path / "r.jsonl",
            headless=False,
        )
        log = tmp_path / "locust.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        locust = WebLocust(f"http://127.0.0.1:{port}", url, tmp_path / "r.jsonl", log, proc)
        try:
            wait_until(
                lambda: _status(locust.url), lambda s: s == 200, timeout=60, what="the web UI", log=log.read_text
            )
            wait_until(
                lambda: _scrape(locust.url),
                lambda s: (
                    value(s, "llm_client_users") == 3
                    and value(s, "llm_client_requests_total", **LABELS, status="ok", http_status="200") > 3
                ),
                timeout=60,
                what="3 users running and more than 3 requests done",
                show=lambda s: str({k[0]: v for k, v in s.items() if k[0].startswith("llm_client_requests")}),
                log=log.read_text,
            )
            yield locust
        finally:
            stop(proc)


def test_sigterm_stops_it_without_writing_to_a_closed_records_file(web_locust):
    """Locust fires `quitting` before it stops its users: the records file must stay open until then, or the users
    loop on "I/O operation on closed file" and Locust does not stop on SIGTERM."""
    os.killpg(web_locust.process.pid, signal.SIGTERM)
    web_locust.process.wait(20)  # raises if SIGTERM did not stop it
    log = web_locust.log.read_text(errors="replace")
    assert "closed file" not in log and "Traceback" not in log, log[-3000:]
    records, bad = read_records(web_locust.records)
    assert bad == 0 and records
    # Every request the server received is recorded, those in flight at SIGTERM as cancelled (Locust's own --csv,
    # written before it stops its users, misses them: the records are the ones to trust). Often none is in flight:
    # the 3 users run in lockstep, and the signal is handled between two rounds as often as during one.
    received = value(_scrape(web_locust.server), "tgi_request_count")
    cancelled = sum(r.status == "cancelled" for r in records)
    assert len(records) == received and cancelled <= 3, (
        f"{len(records)} records ({cancelled} cancelled), {received} sent"
    )


def test_metrics_and_live_tab(web_locust):
    samples, types = parse(httpx.get(f"{web_locust.url}/metrics").text)
    assert types["llm_client_ttft_seconds"] == "histogram"
    assert types["llm_client_requests_total"] == "counter"
    ok = value(samples, "llm_client_requests_total", **LABELS, status="ok", http_status="200")
    assert ok > 3
    assert value(samples, "llm_client_output_tokens_total", **LABELS) == 16 * ok
    assert value(samples, "llm_client_e2e_seconds_count", **LABELS) == ok
    assert value(samples, "llm_client_users") == 3
    stats = httpx.get(f"{web_locust.url}/stats/requests").json()
    tab = next(t for t in stats["extended_stats"] if t["key"] == "llm")
    row = tab["data"][0]
    assert row["target"] == "synthetic" and float(row["tok_s"]) > 0 and int(row["ok"]) > 0
    # The tab's TTFT is the client's measurement, in ms: never below the 20 ms the server waits before the first
    # token, and within what the records (a superset of the tab's 10 s window, read after it) measured.
    records, _ = read_records(web_locust.records)
    ttft_ms = [r.ttft_s * 1000 for r in records if r.ok and r.ttft_s is not None]
    assert ttft_ms and 20 <= float(row["ttft_p50_ms"]) <= max(ttft_ms) + 0.5, (row, min(ttft_ms), max(ttft_ms))
    # Real requests are counted once: the TTFT/ITL/tokens rows do not add to the total.
    entries = {e["name"]: e for e in stats["stats"]}
    total = entries["Aggregated"]["num_requests"]
    assert total == entries["synthetic e2e"]["num_requests"]
    assert entries["synthetic TTFT"]["num_requests"] > 0


def test_distributed_run_counts_each_request_once(tmp_path):
    records_path = tmp_path / "requests.jsonl"
    metrics_port = free_port()
    with synthetic_server(ttft_ms=10, gap_ms=2, tokens=8) as url:
        run = run_locust(
            url,
            records_path,
            "--processes",
            "2",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "5s",
            "--max-new-tokens",
            "8",
            "--stop-timeout",
            "5s",
            "--csv",
            str(tmp_path / "stats"),
            "--metrics-port",
            str(metrics_port),
            "--target-name",
            "syn",
            "--loglevel",
            "INFO",  # the master's view of its workers (a missed heartbeat, a late report) if this fails
        )
    log = run.stderr[-3000:]
    assert run.returncode == 0, log
    records, bad = read_records(records_path)
    with open(tmp_path / "stats_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    counts = {"records": len(records), "unreadable": bad, **{n: r["Request Count"] for n, r in rows.items()}}
    assert bad == 0 and len(records) > 20, f"{counts}\n{log}"
    assert int(rows["syn e2e"]["Request Count"]) == len(records) == int(rows["Aggregated"]["Request Count"]), (
        f"{counts}\n{log}"
    )
    assert len({r.request_id for r in records}) == len(records)


def test_llm_tab_renders_in_a_browser(web_locust, tmp_path):
    """What a user sees: the React UI, opened on the LLM tab by headless Chromium, shows the live table."""
    from tests.conftest import require_binary

    chromium = require_binary("chromium")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=4000",
            "--dump-dom",
            f"{web_locust.url}/?tab=llm",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for text in ("TTFT p50 (ms)", "ITL p95 (ms)", "Output tok/s (10 s)", "stream_error", "synthetic"):
        assert text in dom


def test_custom_arguments_appear_in_the_web_ui_form(web_locust):
    page = httpx.get(web_locust.url).text
    options = json.loads(re.search(r'"extra_options": (\{.*?\}\}),', page).group(1))
    assert {"api", "max_new_tokens", "prompts", "request_timeout", "model", "target_name"} <= set(options)
    assert {"arrival_rate", "arrival", "seed", "max_inflight", "arrival_duration"} <= set(options)  # open loop
    assert options["arrival"]["choices"] == ["constant", "poisson"] and options["arrival_rate"]["default_value"] == 0
    assert (
        options["api"]["choices"] == ["openai", "openai-chat", "tgi"]
        and options["max_new_tokens"]["default_value"] == 16
    )
    assert "records_file" not in options  # a server-side path is not a web-form field
