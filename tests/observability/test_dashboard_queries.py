"""Every dashboard query returns data from a real Prometheus scraping a real fastapi-llama, a real Locust master
under a short load, and a dcgm-exporter fixture served on loopback (the vLLM-only series: test_vllm_target.py).
Rules are checked and unit-tested by promtool."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest

from llm_loadtest.client import Target
from llm_loadtest.local import prometheus_config
from llm_loadtest.processes import locust_command
from tests.conftest import require_binary
from tests.support.prom import has_data, query_until, targets
from tests.support.prometheus import DASHBOARD, VLLM_ONLY, dashboard_queries, prometheus, query
from tests.support.servers import REPO, fastapi_llama, free_port, stop
from tests.support.waits import wait_until

DCGM_FIXTURE = REPO / "tests" / "data" / "dcgm-exporter-metrics.txt"


def test_promtool_checks_config_and_rules():
    promtool = require_binary("promtool")
    for args in (
        ["check", "config", str(REPO / "prometheus/prometheus.yml")],
        ["check", "rules", *map(str, sorted((REPO / "prometheus/rules").glob("*.yml")))],
        ["test", "rules", str(REPO / "prometheus/tests/rules_test.yml")],
    ):
        run = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


class _Fixture(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = DCGM_FIXTURE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stack(tiny_model, server_tmp) -> Iterator[str]:
    """fastapi-llama + Locust (web UI, autostarted, light load) + dcgm fixture, scraped by Prometheus every 1 s."""
    prometheus_binary = require_binary("prometheus")
    dcgm = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fixture)
    threading.Thread(target=dcgm.serve_forever, daemon=True).start()
    work = server_tmp / "observability"
    work.mkdir(exist_ok=True)
    with fastapi_llama(server_tmp, "--max-concurrent-requests", "4") as server:
        web_port = free_port()
        locust = subprocess.Popen(
            locust_command(
                server.url,
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(web_port),
                "--autostart",
                "-u",
                "6",
                "-r",
                "6",
                "--run-time",
                "600s",  # longer than the module needs, however slow the machine: the fixture stops it
                "--target-name",
                "naive",
                "--max-new-tokens",
                "24",
                headless=False,
            ),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        config = prometheus_config([Target("naive", server.url)], f"127.0.0.1:{web_port}")
        config["scrape_configs"].append(
            {"job_name": "dcgm", "static_configs": [{"targets": [f"127.0.0.1:{dcgm.server_address[1]}"]}]}
        )
        try:
            with prometheus(prometheus_binary, config, work) as prom:
                # Bad input and more users than the server admits: failures and 429s for the error panels.
                httpx.post(f"{server.url}/generate", json={"inputs": ""})
                # Rates over [1m] need a few scrapes, and the rules run every 5 s: until every query has
                # returned data once (each test then queries again), not a fixed pause.
                answered: set[str] = set()

                def unanswered() -> list[str]:
                    answered.update(e for _, e in QUERIES if e not in answered and has_data(query(prom, e)))
                    return [f"{t}: {e}" for t, e in QUERIES if e not in answered]

                wait_until(
                    unanswered,
                    lambda left: not left,
                    timeout=180,
                    what="every dashboard query to return data",
                    log=lambda: server.log() + "\n" + targets(prom),
                    interval=1,
                )
                yield prom
        finally:
            stop(locust)
            dcgm.shutdown()


QUERIES = [(title, expr) for title, expr in dashboard_queries() if not any(v in expr for v in VLLM_ONLY)]


@pytest.mark.slow
@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}: {e[:40]}" for t, e in QUERIES])
def test_every_dashboard_query_returns_data(stack, title, expr):
    result = query_until(stack, expr)  # data, no NaN; it fails with what it saw and the scrape targets' health
    assert has_data(result), f"{title}: {expr} returned {result}"


@pytest.mark.slow
def test_variables_list_the_target_and_server(stack):
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for var in variables:
        metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"]).groups()
        values = httpx.get(f"{stack}/api/v1/label/{label}/values", params={"match[]": metric}).json()["data"]
        assert values == ["naive"], var["name"]


def test_dashboard_has_units_and_no_placeholders():
    dashboard = json.loads(DASHBOARD.read_text())
    assert "${DS_" not in DASHBOARD.read_text()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["fieldConfig"]["defaults"].get("unit") for p in panels)
    titles = {p["title"] for p in panels}
    assert {
        "Output tokens/s (client)",
        "Generated tokens/s (server)",
        "Queue size",
        "Batch size",
        "GPU utilisation",
        "GPU memory used",
        "GPU power",
    } <= titles
    server_tokens = next(p for p in panels if p["title"] == "Generated tokens/s (server)")
    assert "rate1m" in server_tokens["targets"][0]["expr"]  # a rate, not tokens per request


@pytest.mark.slow
def test_client_requests_carry_the_http_status(stack):
    """The load under test meets 429-style refusals (6 users, 4 admitted) and a 422: each series of the requests
    panel says its HTTP status, so a refusal and a failure tell apart; ok requests are 200s."""
    series = query_until(stack, "llm:client_requests:rate1m")
    labels = [s["metric"] for s in series]
    assert labels and all("http_status" in m for m in labels), labels
    assert {m["http_status"] for m in labels if m["status"] == "ok"} == {"200"}, labels


# Grafana's data units (packages/grafana-data/src/valueFormats/categories.ts): "mbytes" is mebibytes (binary
# prefix), "decmbytes" megabytes (SI prefix).
HELP_UNIT_TO_GRAFANA = {"MiB": "mbytes", "%": "percent", "W": "watt"}


def test_gpu_panels_use_the_unit_dcgm_exporter_reports():
    units = {
        name: unit for name, unit in re.findall(r"^# HELP (\w+) .*\(in ([^)]+)\)\.$", DCGM_FIXTURE.read_text(), re.M)
    }
    assert units["DCGM_FI_DEV_FB_USED"] == "MiB"
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    checked = 0
    for p in panels:
        for t in p["targets"]:
            if t["expr"] in units:
                assert p["fieldConfig"]["defaults"]["unit"] == HELP_UNIT_TO_GRAFANA[units[t["expr"]]], p["title"]
                checked += 1
    assert checked == 3


def test_axis_labels_are_words_not_unit_ids():
    """Grafana shows an axis label as written: it must name what the axis counts, never repeat a unit id
    ("percentunit"). Ticks of a unit carry the unit already; bare-number axes ("short") get a word."""
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    unit_ids = {p["fieldConfig"]["defaults"]["unit"] for p in panels}
    for p in panels:
        defaults = p["fieldConfig"]["defaults"]
        label = defaults["custom"]["axisLabel"]
        assert label not in unit_ids, f"{p['title']}: axis label {label!r} is a unit id"
        if defaults["unit"] == "short":
            assert label, f"{p['title']}: bare numbers on the axis and no label"
