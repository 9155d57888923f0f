"""The whole load tester against the real service: sweep, records, report."""

from __future__ import annotations

import json
import subprocess

import pytest

from llm_loadtest.client import RequestSpec, Target, stream_request
from llm_loadtest.dialects import DIALECTS
from llm_loadtest.http import Connection
from llm_loadtest.records import read_records
from tests.support.scripted_server import WAIT_S, ScriptedServer, chunk, head
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


def test_chat_without_running_usage_counts_tokens_without_text(naive_server):
    """TGI's Messages API sends no running usage and names the role in every chunk, as fastapi-llama does when not
    asked for continuous_usage_stats; the tiny model's byte tokens then come mid-stream with empty content. The
    service's real streams, played back to the client without the running count: every token is counted."""
    cap, streams = 64, []
    conn = Connection(naive_server.url)
    try:
        for prompt in ("Tell me 1", "Tell me 2", "Tell me 4"):
            body = DIALECTS["openai-chat"].body(prompt, cap, None) | {"stream_options": {"include_usage": True}}
            resp = conn.post_stream("/v1/chat/completions", body, {"Accept": "text/event-stream"}, 60)
            assert resp.status == 200
            streams.append(b"".join(resp.body))
    finally:
        conn.close()
    events = [[e for e in s.split(b"\n\n") if e.strip()] for s in streams]
    chunks = [json.loads(e[6:]) for stream in events for e in stream if e != b"data: [DONE]"]
    assert not any(c.get("usage") and c["choices"] for c in chunks)  # no running count
    empty = [c for c in chunks if c["choices"] and c["choices"][0]["delta"] == {"role": "assistant", "content": ""}]
    assert empty, "no token without text in these streams: the test would prove nothing"

    def play(stream: list[bytes]):
        def script(peer) -> None:
            peer.expect_request()
            peer.send(head(content_type="text/event-stream", transfer_encoding="chunked"))
            peer.send(*(chunk(e + b"\n\n") for e in stream), b"0\r\n\r\n")
            peer.read_request()

        return script

    spec = RequestSpec("Tell me", cap, timeout_s=WAIT_S)
    for stream in events:
        with ScriptedServer(play(stream)) as server:
            conn = Connection(server.url)
            try:
                r = stream_request(conn, Target("t", server.url, "openai-chat"), spec)
            finally:
                conn.close()
        assert (r.status, r.output_tokens, r.server_tokens) == ("ok", cap, cap) and not r.token_mismatch


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
