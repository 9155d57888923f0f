"""The Locust web UI, extended: an "LLM" tab with live figures, and /metrics for Prometheus."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from flask import Response, request
from locust.env import Environment
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llm_loadtest.metrics import STATUSES

if TYPE_CHECKING:
    from llm_loadtest.locust_plugin import MasterState

TAB_KEY = "llm"
COLUMNS = [
    ("target", "Target"),
    ("tok_s", "Output tok/s (10 s)"),
    ("ttft_p50_ms", "TTFT p50 (ms)"),
    ("ttft_p95_ms", "TTFT p95 (ms)"),
    ("itl_p50_ms", "ITL p50 (ms)"),
    ("itl_p95_ms", "ITL p95 (ms)"),
    ("ttft_from_due_p95_ms", "Open loop: TTFT p95 from due (ms)"),
    ("send_lag_p99_ms", "Open loop: send lag p99 (ms)"),
    *[(s, s) for s in STATUSES],
    ("not_sent", "not sent"),
]


def extend_web_ui(environment: Environment, state: MasterState) -> None:
    web_ui = environment.web_ui
    assert web_ui is not None
    web_ui.template_args["extended_tabs"] = [{"title": "LLM", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]

    @web_ui.app.after_request
    def _add_llm_stats(response: Response) -> Response:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        payload = response.get_json(silent=True) or {}
        payload["extended_stats"] = [{"key": TAB_KEY, "data": state.live.rows()}]
        response.set_data(json.dumps(payload))
        return response

    @web_ui.app.route("/metrics")
    def _metrics() -> Response:
        return Response(generate_latest(state.registry), mimetype=CONTENT_TYPE_LATEST)
