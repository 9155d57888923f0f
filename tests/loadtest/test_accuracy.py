"""The load tester measures what the server did: TTFT and ITL within 2 ms (p50) at 64 concurrent streams."""

from __future__ import annotations

import numpy as np
import pytest

from llm_loadtest.records import read_records
from tests.support.loadgen import run_locust, synthetic_server

TTFT_MS, GAP_MS, TOKENS = 50, 10, 64


@pytest.mark.parametrize("api", ["tgi", "openai"])
def test_timings_agree_with_the_truth_at_64_streams(tmp_path, api):
    records_path = tmp_path / "requests.jsonl"
    with synthetic_server(TTFT_MS, GAP_MS, TOKENS) as url:
        run = run_locust(
            url,
            records_path,
            "-u",
            "64",
            "-r",
            "64",
            "-t",
            "6s",
            "--api",
            api,
            "--max-new-tokens",
            str(TOKENS),
            "--stop-timeout",
            "5s",
        )
    assert run.returncode == 0, run.stderr[-2000:]
    records, bad = read_records(records_path)
    assert bad == 0 and len(records) >= 64
    assert {r.status for r in records} == {"ok"}
    assert all(r.output_tokens == TOKENS == r.server_tokens for r in records)
    ttft_p50 = np.percentile([r.ttft_s for r in records], 50) * 1000
    itl_p50 = np.percentile([r.itl_s for r in records], 50) * 1000
    assert abs(ttft_p50 - TTFT_MS) < 2, f"TTFT p50 {ttft_p50:.2f} ms, truth {TTFT_MS} ms"
    assert abs(itl_p50 - GAP_MS) < 2, f"ITL p50 {itl_p50:.2f} ms, truth {GAP_MS} ms"
    assert all(len(r.gaps_s) == TOKENS - 1 for r in records)
