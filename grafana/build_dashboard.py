"""Writes dashboards/llm-serving.json: "LLM serving — side by side". Run after editing; the JSON is checked in,
and tests run every query in it against a real Prometheus.

    python grafana/build_dashboard.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "llm-serving.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
CLIENT = 'target=~"$target"'
SERVER = 'server=~"$server"'
NO_DCGM = "dcgm-exporter runs in the gpu profile only: empty on a stack started without it."


@dataclass
class Panel:
    """One time-series panel. `unit` is a Grafana unit id (its tick labels carry the unit: "2 GiB", "500 ms");
    `axis` names what the axis counts where the ticks are bare numbers ("short"), and is left empty otherwise: the
    axis label is shown as written, and a unit id there read as "percentunit"."""

    title: str
    unit: str
    targets: list[tuple[str, str]]  # (expr, legend)
    description: str = ""
    axis: str = ""
    kind: str = "timeseries"
    stack: bool = False
    extra: dict = field(default_factory=dict)


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Client view (Locust)",
        [
            Panel(
                "Output tokens/s (client)",
                "short",
                [(f"sum by (target) (llm:client_output_tokens:rate1m{{{CLIENT}}})", "{{target}}")],
                "Tokens counted in the streams of successful requests, per second (1 m rate).",
                axis="tokens/s",
            ),
            Panel(
                "Time to first token",
                "s",
                [
                    (f"llm:client_ttft_seconds:p50{{{CLIENT}}}", "{{target}} p50"),
                    (f"llm:client_ttft_seconds:p95{{{CLIENT}}}", "{{target}} p95"),
                ],
                "From sending a request to its first token event, as the client measures it.",
            ),
            Panel(
                "End-to-end latency",
                "s",
                [
                    (f"llm:client_e2e_seconds:p50{{{CLIENT}}}", "{{target}} p50"),
                    (f"llm:client_e2e_seconds:p95{{{CLIENT}}}", "{{target}} p95"),
                ],
            ),
            Panel(
                "Inter-token latency",
                "s",
                [
                    (f"llm:client_itl_seconds:p50{{{CLIENT}}}", "{{target}} p50"),
                    (f"llm:client_itl_seconds:p95{{{CLIENT}}}", "{{target}} p95"),
                ],
                "Mean gap between tokens after the first, per request.",
            ),
            Panel(
                "Requests by status",
                "reqps",
                [(f"llm:client_requests:rate1m{{{CLIENT}}}", "{{target}} {{status}} {{http_status}}")],
                "By status (ok, http_error, stream_error: an error event in a 200 stream, timeout, connection_error,"
                " not_event_stream, cancelled) and HTTP status code, so that a 429 (refused) and a 500 (failed) tell"
                " apart; none when no response arrived.",
                stack=True,
            ),
            Panel("Users (concurrent request loops)", "short", [("sum(llm_client_users)", "users")], axis="users"),
        ],
    ),
    (
        "Server view (TGI, fastapi-llama, vLLM)",
        [
            Panel(
                "Generated tokens/s (server)",
                "short",
                [(f"llm:server_output_tokens:rate1m{{{SERVER}}}", "{{server}}")],
                "A rate of generated tokens — unlike TGI's own dashboard, which plots tokens per request.",
                axis="tokens/s",
            ),
            Panel(
                "Request rate",
                "reqps",
                [
                    (f"llm:server_requests:rate1m{{{SERVER}}}", "{{server}} ok"),
                    (f"llm:server_failures:rate1m{{{SERVER}}}", "{{server}} {{err}}"),
                ],
            ),
            Panel(
                "Request duration",
                "s",
                [
                    (f"llm:server_request_duration_seconds:p50{{{SERVER}}}", "{{server}} p50"),
                    (f"llm:server_request_duration_seconds:p95{{{SERVER}}}", "{{server}} p95"),
                ],
            ),
            Panel(
                "Queue time p50 and time per token p50",
                "s",
                [
                    (f"llm:server_queue_duration_seconds:p50{{{SERVER}}}", "{{server}} queue"),
                    (f"llm:server_time_per_token_seconds:p50{{{SERVER}}}", "{{server}} per token"),
                ],
            ),
            Panel(
                "Queue size",
                "short",
                [(f"llm:server_queue_size{{{SERVER}}}", "{{server}}")],
                "Requests waiting for the model.",
                axis="requests",
            ),
            Panel(
                "Batch size",
                "short",
                [(f"llm:server_batch_size{{{SERVER}}}", "{{server}}")],
                "Requests being generated together (1 at most for naive FastAPI).",
                axis="requests",
            ),
            Panel(
                "Time to first token (server, vLLM)",
                "s",
                [
                    (f"llm:server_ttft_seconds:p50{{{SERVER}}}", "{{server}} p50"),
                    (f"llm:server_ttft_seconds:p95{{{SERVER}}}", "{{server}} p95"),
                ],
                "vLLM's own TTFT histogram. TGI and fastapi-llama export none: see the client's TTFT above.",
            ),
            Panel(
                "KV cache usage (vLLM)",
                "percentunit",
                [(f"llm:server_kv_cache_usage:ratio{{{SERVER}}}", "{{server}}")],
                "Share of vLLM's KV-cache blocks in use; near 1, new requests wait or are preempted.",
            ),
        ],
    ),
    (
        "GPUs (dcgm-exporter: gpu profile only)",
        [
            Panel("GPU utilisation", "percent", [("DCGM_FI_DEV_GPU_UTIL", "GPU {{gpu}} {{modelName}}")], NO_DCGM),
            # dcgm-exporter reports framebuffer memory in MiB: Grafana's "mbytes" (mebibytes), not "decmbytes" (MB).
            Panel("GPU memory used", "mbytes", [("DCGM_FI_DEV_FB_USED", "GPU {{gpu}}")], NO_DCGM),
            Panel("GPU power", "watt", [("DCGM_FI_DEV_POWER_USAGE", "GPU {{gpu}}")], NO_DCGM),
        ],
    ),
]


def panel_json(p: Panel, panel_id: int, x: int, y: int) -> dict:
    return {
        "id": panel_id,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": p.unit,
                "min": 0,
                "custom": {"stacking": {"mode": "normal" if p.stack else "none"}, "axisLabel": p.axis},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(65 + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(p.targets)
        ],
    }


def variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def build() -> dict:
    panels, y, next_id = [], 0, 1
    for title, row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        for i, p in enumerate(row):
            panels.append(panel_json(p, next_id, (i % 3) * 8, y + (i // 3) * 8))
            next_id += 1
        y += ((len(row) + 2) // 3) * 8
    return {
        "uid": "llm-serving",
        "title": "LLM serving — side by side",
        "tags": ["llm", "tgi", "vllm", "locust"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {
            "list": [
                variable("target", "Client target", "label_values(llm_client_requests_total, target)"),
                variable("server", "Server", "label_values(llm:server_queue_size, server)"),
            ]
        },
        "panels": panels,
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
