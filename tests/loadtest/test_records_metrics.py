"""Records (JSONL round trip, cut lines, derived flags), the step summary on hand-made records, the live window."""

from __future__ import annotations

import json

import pytest

from llm_loadtest.live import LiveWindow
from llm_loadtest.metrics import SLO, STATUSES, error_rate, peak_in_flight, percentile, summarize
from llm_loadtest.records import RecordWriter, RequestRecord, Status, read_records
from tests.support.records import rec


def step(records, users=4, wall_s=2.0, **kw):
    return summarize(records, target="t", api="tgi", users=users, max_new_tokens=16, wall_s=wall_s, **kw)


# Records


def test_record_json_round_trip():
    r = rec(tokens=3)
    r.error = 'HTTP 503: "quoted" \u00e9'
    line = r.to_json()
    assert "\n" not in line
    assert RequestRecord.from_dict(json.loads(line)) == r


def test_from_dict_ignores_fields_it_does_not_know():
    data = json.loads(rec().to_json()) | {"added_in_a_later_version": 1}
    assert RequestRecord.from_dict(data) == rec()


def test_read_records_skips_a_line_cut_short(tmp_path):
    path = tmp_path / "run" / "requests.jsonl"
    writer = RecordWriter(path)  # creates the directory
    writer.write(rec(start=1.0))
    writer.write(rec(start=2.0, status="timeout", tokens=2))
    writer.close()
    whole = rec(start=3.0).to_json()
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + whole[: len(whole) // 2])  # a blank line, then a line cut by a kill
    records, bad = read_records(path)
    assert [r.start for r in records] == [1.0, 2.0] and bad == 1
    assert records[1].status == "timeout" and records[1].output_tokens == 2


def test_read_records_counts_a_line_missing_fields_as_bad(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(rec().to_json() + "\n" + json.dumps({"request_id": "x", "status": "ok"}) + "\n")
    records, bad = read_records(path)
    assert len(records) == 1 and bad == 1


def test_read_records_counts_a_line_that_is_not_an_object_as_bad(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(rec().to_json() + "\n42\n")
    assert read_records(path) == ([rec()], 1)


def test_read_records_of_a_missing_file(tmp_path):
    assert read_records(tmp_path / "nope.jsonl") == ([], 0)


@pytest.mark.parametrize(
    ("record", "refused"),
    [
        (rec("connection_error", ttft=None, tokens=0, http_status=None), True),  # connection refused
        (rec("http_error", ttft=None, tokens=0, http_status=429), True),
        (rec("http_error", ttft=None, tokens=0, http_status=503), True),
        (rec("http_error", ttft=None, tokens=0, http_status=500), False),
        (rec("stream_error", ttft=None, tokens=0), True),  # TGI's overload error event before any token
        (rec("stream_error", tokens=3), False),
        (rec("timeout", ttft=None, tokens=0), False),
        (rec("cancelled", ttft=None, tokens=0), False),
        (rec(), False),
    ],
)
def test_refused(record, refused):
    assert record.refused is refused


def test_a_stream_cut_after_tokens_is_not_a_refusal():
    assert not rec("connection_error", tokens=5).refused


def test_token_mismatch():
    assert rec(tokens=10, server=11).token_mismatch
    assert not rec(tokens=10, server=10).token_mismatch
    assert not rec("timeout", tokens=3, server=None).token_mismatch  # no count from the server: nothing to compare


# Metrics


def test_percentile_interpolates_linearly():
    assert percentile([], 50) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([0.7], 99) == pytest.approx(0.7)


def test_peak_in_flight():
    assert peak_in_flight([]) == 0
    back_to_back = [rec(start=0, e2e=1.0), rec(start=1.0, e2e=1.0), rec(start=2.0, e2e=1.0)]
    assert peak_in_flight(back_to_back) == 1  # one ends as the next starts: never two at once
    nested = [rec(start=0, e2e=10.0), rec(start=1, e2e=1.0), rec(start=1.5, e2e=1.0), rec(start=5, e2e=1.0)]
    assert peak_in_flight(nested) == 3


def test_error_rate_excludes_cancelled():
    assert error_rate([]) == 0.0
    assert error_rate([rec("cancelled"), rec("cancelled")]) == 0.0
    records = [rec(), rec("timeout"), rec("http_error"), rec("cancelled"), rec()]
    assert error_rate(records) == pytest.approx(2 / 4)


def test_summary_of_known_records():
    records = [rec(start=0.0, ttft=t, e2e=e, tokens=n) for t, e, n in [(0.1, 1.0, 10), (0.2, 2.0, 19), (0.3, 1.5, 6)]]
    records += [
        rec("http_error", start=0.5, ttft=None, e2e=0.01, tokens=0, http_status=503),
        rec("cancelled", start=1.0, ttft=0.2, e2e=1.0, tokens=4, server=None),
    ]
    s = step(records, users=4, wall_s=2.0)
    assert (s.requests, s.ok, s.output_tokens) == (5, 3, 35)
    # The plateau is 3 in flight (the 503 made 4 for 10 ms), from 0 to 1.5 s: the OK tokens that arrived in it
    # (10, 14 of 19, 6), cancelled ones' left out, per second.
    assert s.window_s == pytest.approx(1.5) and s.output_tok_s == pytest.approx(30 / 1.5)
    assert s.tok_s_per_user == pytest.approx((10 / 1.0 + 19 / 2.0 + 6 / 1.5) / 3)
    assert s.requests_per_s == pytest.approx(5 / 2.0)
    assert s.ttft_p50_s == pytest.approx(0.2)
    assert s.ttft_p95_s == pytest.approx(0.29)
    assert s.ttft_p99_s == pytest.approx(0.298)
    assert s.e2e_p50_s == pytest.approx(1.5)  # the failed and cancelled requests' e2e are not in it
    assert s.e2e_p95_s == pytest.approx(1.95)
    assert s.itl_p50_s == pytest.approx(0.9 / 9)
    assert s.errors == {
        "http_error": 1,
        "stream_error": 0,
        "timeout": 0,
        "connection_error": 0,
        "not_event_stream": 0,
        "cancelled": 1,
    }
    assert list(s.errors) == [x for x in STATUSES if x != "ok"]
    assert s.error_rate == pytest.approx(1 / 4)
    assert s.refused == 1
    assert s.achieved_concurrency == pytest.approx((1.0 + 2.0 + 1.5 + 0.01 + 1.0) / 2.0)
    assert s.peak_concurrency == 4  # the three sent at 0 and the 503 at 0.5


def test_summary_without_ok_requests_has_no_latencies():
    s = step([rec("timeout", tokens=3, server=None), rec("timeout", tokens=0, ttft=None)], users=2, wall_s=0.0)
    assert (s.ok, s.output_tokens, s.output_tok_s) == (0, 0, 0.0)
    assert s.tok_s_per_user is None and s.ttft_p50_s is None and s.itl_p95_s is None and s.e2e_p99_s is None
    assert s.error_rate == 1.0


def test_goodput_with_an_slo():
    slo = SLO(ttft_s=0.5, itl_s=0.05)
    records = [
        rec(ttft=0.5, e2e=0.95, tokens=10),  # TTFT and ITL exactly at the limits: met
        rec(ttft=0.6, e2e=0.7, tokens=3),  # TTFT over
        rec(ttft=0.1, e2e=1.1, tokens=10),  # ITL 0.111 over
        rec(ttft=0.2, e2e=0.2, tokens=1),  # one token: no ITL, met on TTFT
        rec("timeout", ttft=0.1, e2e=0.2, tokens=1),  # not OK: never good
    ]
    assert step(records, wall_s=4.0, slo=slo).goodput == pytest.approx(2 / 4.0)


def test_token_mismatches_are_counted_over_all_records():
    records = [rec(tokens=10, server=11), rec(tokens=4, server=4), rec("stream_error", tokens=3, server=5)]
    assert step(records).token_mismatches == 2


def test_loadgen_flags():
    # CPU at the limit: flagged whatever the concurrency.
    s = step([rec(e2e=2.0, start=0)] * 4, users=4, loadgen_cpu=0.9)
    assert s.loadgen_bottleneck and s.notes == ["load generator CPU at 90% of a core per process"]
    # Peak held, but users sent several requests each and the mean sat below 80% of the users.
    spread = [rec(start=0, e2e=2.0)] * 4 + [rec(start=2.0 + i, e2e=0.1) for i in range(4)]
    s = step(spread, users=4, wall_s=6.0, loadgen_cpu=0.1)
    assert s.peak_concurrency == 4 and s.loadgen_bottleneck
    assert s.notes == ["held 1.4 (peak 4) of 4 concurrent requests"]
    # One request per user, all overlapping: fine, however short the step.
    assert not step([rec(start=0, e2e=1.0)] * 4, users=4, wall_s=1.0).loadgen_bottleneck
    # No users given (a replay): nothing to judge.
    assert not step([rec()], users=0).loadgen_bottleneck


def test_refusals_note_instead_of_a_loadgen_flag():
    records = [rec(start=0, e2e=1.0), rec("http_error", ttft=None, tokens=0, http_status=429, start=0, e2e=0.01)]
    s = step(records, users=8, wall_s=1.0)
    assert not s.loadgen_bottleneck and s.notes == ["1 requests refused before their first token"]


# Live window


def test_live_window_keeps_the_last_window_by_target():
    live = LiveWindow(window_s=10.0)
    live.add(rec(ttft=0.1, e2e=1.0, tokens=10, target="b"), now=100.0)
    live.add(rec(ttft=0.3, e2e=2.0, tokens=20, target="a"), now=105.0)
    live.add(rec("timeout", tokens=5, target="a"), now=106.0)
    rows = live.rows(now=110.0)  # the first is exactly 10 s old: still in
    assert [r["target"] for r in rows] == ["a", "b"]
    a, b = rows
    assert a["tok_s"] == "2.0" and b["tok_s"] == "1.0"  # OK tokens / window
    assert (a["ttft_p50_ms"], a["itl_p50_ms"]) == ("300", f"{1.7 / 19 * 1000:.0f}")
    assert (a["ok"], a["timeout"], a["http_error"]) == ("1", "1", "0")
    rows = live.rows(now=110.5)  # the first has left the window
    assert [r["target"] for r in rows] == ["a"]
    assert live.totals == {"ok": 2, "timeout": 1}  # totals since the start, not windowed


def test_live_window_without_ok_requests_and_reset():
    live = LiveWindow(window_s=5.0)
    live.add(rec("stream_error", ttft=None, tokens=0), now=1.0)
    (row,) = live.rows(now=2.0)
    assert (row["tok_s"], row["ttft_p50_ms"], row["itl_p95_ms"], row["stream_error"]) == ("0.0", "-", "-", "1")
    figures = {"tok_s", "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p95_ms"}
    figures |= {"ttft_from_due_p95_ms", "send_lag_p99_ms"}  # open loop's
    assert set(row) == {"target", *figures, *STATUSES, "not_sent"}
    live.reset()
    assert live.rows(now=2.0) == [] and not live.totals


def test_status_values_are_the_documented_ones():
    assert STATUSES == [
        "ok",
        "http_error",
        "stream_error",
        "timeout",
        "connection_error",
        "not_event_stream",
        "cancelled",
    ]
    assert Status("ok") is Status.OK
