"""A real Prometheus on loopback for the tests, and the dashboard's queries run against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import REPO, free_port, running

DASHBOARD = REPO / "grafana" / "dashboards" / "llm-serving.json"
# Series only vLLM exports (TGI has no TTFT histogram and no KV-cache gauge): checked against the real vLLM.
VLLM_ONLY = ("llm:server_ttft_seconds", "llm:server_kv_cache_usage")


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p["targets"]]


@contextmanager
def prometheus(binary: str, config: dict, work: Path) -> Iterator[str]:
    """Prometheus with `config` (scraping and rule evaluation every second, as local mode runs it)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    cmd = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running(cmd, f"http://127.0.0.1:{port}", work / "prometheus.log", 60, ready_path="/-/ready") as server:
        yield server.url


def query(prom: str, expr: str, target: str = ".*", server: str = ".*") -> list[dict]:
    """An instant query, with the dashboard's variables $target and $server set."""
    expr = expr.replace("$target", target).replace("$server", server)
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]
