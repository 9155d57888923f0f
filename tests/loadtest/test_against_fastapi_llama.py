"""The whole load tester against the real service: sweep, records, report."""

from __future__ import annotations

import subprocess

import pytest

from llm_loadtest.client import RequestSpec, Target, stream_request
from llm_loadtest.http import Connection
from llm_loadtest.records import read_records
from tests.support.servers import VENV_BIN


@pytest.mark.parametrize("api", ["tgi", "openai", "openai-chat"])
def test_each_dialect_counts_the_tokens_the_service_reports(naive_server, api):
    """The tokens a dialect counts in the stream equal the server's own count (details / usage), request after
    request on one kept-alive connection."""
    target = Target("fastapi", naive_server.url, api)
    conn = Connection(naive_server.url)
    try:
        records = [stream_request(conn, target, RequestSpec(prompt, 12, timeout_s=60)) for prompt in ("Hi", "def f")]
    finally:
        conn.close()
    for r in records:
        assert (r.status, r.finish_reason) == ("ok", "length"), r.error
        assert r.output_tokens == r.server_tokens == 12
        assert len(r.gaps_s) == 11 and r.ttft_s is not None


@pytest.mark.slow
@pytest.mark.parametrize("api", ["tgi", "openai", "openai-chat"])
def test_sweep_and_report_against_the_service(naive_server, tmp_path, api):
    out = tmp_path / "sweep"
    run = subprocess.run(
        [
            str(VENV_BIN / "llm-loadtest"),
            "sweep",
            "--target",
            f"fastapi={naive_server.url}@{api}",
            "--users",
            "1,2",
            "--max-new-tokens",
            "16",
            "--requests",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    records, _ = read_records(out / "requests.jsonl")
    assert len(records) >= 8 and {r.status for r in records} == {"ok"}
    # Tokens counted in the stream agree with what the server reports (details / usage).
    assert all(r.server_tokens == r.output_tokens for r in records)
    assert all(r.output_tokens <= 16 for r in records)
    assert (out / "report.md").exists() and (out / "throughput.png").exists()


@pytest.mark.slow
def test_open_loop_sweep_against_the_service(naive_server, tmp_path):
    """Open loop through the chat dialect: 8 Poisson arrivals at 4 requests/s (--requests ÷ rate: 2 s), each sent at
    its due time whatever the service is doing, each counted as the service counts it."""
    out = tmp_path / "sweep"
    target = f"fastapi={naive_server.url}@openai-chat"
    args = ["--rates", "4", "--requests", "8", "--max-new-tokens", "8", "--warmup", "1", "--out", str(out)]
    run = subprocess.run(
        [str(VENV_BIN / "llm-loadtest"), "sweep", "--target", target, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    records, _ = read_records(out / "requests.jsonl")
    assert records and {(r.status, r.rate, r.users) for r in records} == {("ok", 4.0, 0)}
    assert all(r.due is not None and r.start >= r.due for r in records)
    assert all(r.server_tokens == r.output_tokens == 8 for r in records)
    report = (out / "report.md").read_text()
    assert "## Open-loop steps" in report and "## Steps" not in report and (out / "open_loop.png").exists()
