"""Every outcome is counted in its own status: ok, http_error, stream_error, timeout, connection_error."""

from __future__ import annotations

from collections import Counter

from llm_loadtest.records import read_records
from tests.support.loadgen import run_locust, synthetic_server


def test_each_status_class_is_counted_right(tmp_path):
    records_path = tmp_path / "requests.jsonl"
    # The server cycles: ok, stream_error, ok, http_429, ok, disconnect, ok, stall. The run ends at its 16th
    # request (a few seconds); its run time only bounds a run that hangs, so a loaded machine does not cut it short.
    with synthetic_server(ttft_ms=5, gap_ms=2, tokens=8, behavior="mixed") as url:
        run = run_locust(
            url,
            records_path,
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "120s",
            "--max-requests",
            "16",
            "--request-timeout",
            "1",
            "--max-new-tokens",
            "8",
            timeout=180,
        )
    assert run.returncode in (0, 1), run.stderr[-2000:]  # Locust exits 1 when requests failed
    records, _ = read_records(records_path)
    first = sorted(records, key=lambda r: r.start)[:16]
    assert len(first) == 16
    counts = Counter(r.status for r in first)
    assert counts == {"ok": 8, "stream_error": 2, "http_error": 2, "connection_error": 2, "timeout": 2}
    by_status = {r.status: r for r in first}
    assert by_status["http_error"].http_status == 429 and "overloaded" in by_status["http_error"].error
    assert "overloaded" in by_status["stream_error"].error and by_status["stream_error"].output_tokens == 3
    # Each stall is ended by its own 1 s deadline (the run's end would cancel it instead): at 1 s, well before 3.
    timeouts = [(r.error, r.e2e_s) for r in first if r.status == "timeout"]
    assert all(error == "no end after 1s" and 1 <= e2e < 3 for error, e2e in timeouts), timeouts
    assert by_status["ok"].output_tokens == 8 and by_status["ok"].finish_reason == "length"
