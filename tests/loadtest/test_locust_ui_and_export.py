"""Locust's web UI shows the LLM tab and serves the client's view at /metrics; distributed runs count once."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time

import httpx
import pytest

from llm_loadtest.records import read_records
from tests.support.loadgen import LOCUSTFILE, run_locust, synthetic_server
from tests.support.prom import parse, value
from tests.support.servers import REPO, VENV_BIN, free_port, stop


@pytest.fixture
def web_locust(tmp_path):
    """Locust with its web UI, started by the test as a user would, and a synthetic server to load."""
    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=16) as url:
        port = free_port()
        cmd = [
            str(VENV_BIN / "locust"),
            "-f",
            str(LOCUSTFILE),
            "--host",
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
            "20s",
            "--target-name",
            "synthetic",
            "--max-new-tokens",
            "16",
            "--records-file",
            str(tmp_path / "r.jsonl"),
        ]
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            time.sleep(2.5)  # let requests finish
            yield base
        finally:
            stop(proc)


def test_metrics_and_live_tab(web_locust):
    samples, types = parse(httpx.get(f"{web_locust}/metrics").text)
    labels = {"target": "synthetic", "api": "tgi", "max_new_tokens": "16"}
    assert types["llm_client_ttft_seconds"] == "histogram"
    assert types["llm_client_requests_total"] == "counter"
    ok = value(samples, "llm_client_requests_total", **labels, status="ok")
    assert ok > 3
    assert value(samples, "llm_client_output_tokens_total", **labels) == 16 * ok
    assert value(samples, "llm_client_e2e_seconds_count", **labels) == ok
    assert value(samples, "llm_client_users") == 3
    stats = httpx.get(f"{web_locust}/stats/requests").json()
    tab = next(t for t in stats["extended_stats"] if t["key"] == "llm")
    row = tab["data"][0]
    assert row["target"] == "synthetic" and float(row["tok_s"]) > 0 and int(row["ok"]) > 0
    assert 15 < float(row["ttft_p50_ms"]) < 60
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
        )
    assert run.returncode == 0, run.stderr[-2000:]
    records, bad = read_records(records_path)
    with open(tmp_path / "stats_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    assert bad == 0 and len(records) > 20
    assert int(rows["syn e2e"]["Request Count"]) == len(records) == int(rows["Aggregated"]["Request Count"])
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
            f"{web_locust}/?tab=llm",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for text in ("TTFT p50 (ms)", "ITL p95 (ms)", "Output tok/s (10 s)", "stream_error", "synthetic"):
        assert text in dom


def test_custom_arguments_appear_in_the_web_ui_form(web_locust):
    page = httpx.get(web_locust).text
    options = json.loads(re.search(r'"extra_options": (\{.*?\}\}),', page).group(1))
    assert {"api", "max_new_tokens", "prompts", "request_timeout", "model", "target_name"} <= set(options)
    assert options["api"]["choices"] == ["openai", "tgi"] and options["max_new_tokens"]["default_value"] == 16
    assert "records_file" not in options  # a server-side path is not a web-form field
