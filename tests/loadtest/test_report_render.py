"""report.render_markdown on a Report built from step summaries of hand-made records (two targets, two caps)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llm_loadtest.metrics import SLO, StepSummary, summarize
from llm_loadtest.records import RequestRecord
from llm_loadtest.report import render_markdown
from llm_loadtest.results import Results, speedups

CHARTS = ["throughput.png", "latency.png"]


def rec(target: str, status: str = "ok", ttft: float | None = 0.2, e2e: float = 1.0, tokens: int = 10, server=None):
    return RequestRecord(
        request_id="x",
        target=target,
        api="tgi",
        users=0,
        max_new_tokens=0,
        status=status,
        start=0.0,
        ttft_s=ttft,
        e2e_s=e2e,
        itl_s=(e2e - ttft) / (tokens - 1) if ttft is not None and tokens >= 2 else None,
        output_tokens=tokens,
        server_tokens=tokens if server is None else server,
        finish_reason="length",
    )


Step = tuple[StepSummary, list[RequestRecord]]


def results(*steps: Step, **kw) -> Results:
    """Results as `load` makes them: the summaries, and the speed-ups bootstrapped from the steps' records."""
    summaries = [s for s, _ in steps]
    return Results(summaries, speedups=speedups([r for _, recs in steps for r in recs], summaries), **kw)


def step(target: str, cap: int, users: int, records: list[RequestRecord], wall_s: float, **kw) -> Step:
    records = [replace(r, users=users, max_new_tokens=cap) for r in records]
    return summarize(records, target=target, api="tgi", users=users, max_new_tokens=cap, wall_s=wall_s, **kw), records


def a_step(cap: int, users: int, **kw) -> Step:
    """Base target: TTFT 0.2 s, e2e 1 s, 10 tokens per request, `users` requests at once (a wall of 2 s that the
    measurement window of 1 s leaves out): 10 tok/s per user."""
    return step("a", cap, users, [rec("a") for _ in range(users)], 2.0, **kw)


def b_step(cap: int, users: int, **kw) -> Step:
    """Twice as fast: TTFT 0.1 s, e2e 0.5 s, the same tokens in a window of 0.5 s."""
    return step("b", cap, users, [rec("b", ttft=0.1, e2e=0.5) for _ in range(users)], 1.0, **kw)


@pytest.fixture
def report() -> Results:
    incomplete = a_step(16, 2)
    incomplete[0].complete = False
    incomplete[0].notes.append("no summary was saved for this step (the sweep stopped during it)")
    failed = step("b", 64, 2, [rec("b", "timeout", ttft=None, tokens=0, server=0)] * 2, 1.0)
    mismatch = step("b", 16, 1, [rec("b", ttft=0.1, e2e=0.5, server=11)], 1.0)
    summaries = [
        a_step(16, 1, loadgen_cpu=0.5),
        incomplete,
        a_step(64, 1, loadgen_cpu=0.95),
        a_step(64, 2),
        b_step(16, 2),  # listed out of order: the table sorts
        mismatch,
        b_step(16, 4),  # no base step to compare with
        b_step(64, 1),
        failed,
    ]
    return results(*summaries, bad_lines=2, slo=SLO())


def table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after `heading`, without its header and separator."""
    lines = markdown.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_header_notes_and_charts(report):
    md = render_markdown(report, CHARTS)
    assert md.startswith("Trust: ok\n\n# LLM serving benchmark report\n")
    assert "computed from `requests.jsonl` (16 requests)" in md
    assert "TTFT ≤ 2 s and ITL ≤ 100 ms" in md
    assert "2 unreadable line(s) in requests.jsonl were skipped" in md
    assert "![throughput](throughput.png)" in md and "![latency](latency.png)" in md


def test_no_bad_lines_note_without_bad_lines(report):
    report.bad_lines = 0
    assert "unreadable" not in render_markdown(report, [])


def test_steps_table_one_row_per_step_sorted_and_formatted(report):
    md = render_markdown(report, CHARTS)
    header = next(line for line in md.splitlines() if line.startswith("| target |"))
    rows = table(md, "## Steps")
    assert len(rows) == 9 and all(len(r) == header.count("|") - 1 for r in rows)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a", "16", "1"),
        ("a", "16", "2"),
        ("a", "64", "1"),
        ("a", "64", "2"),
        ("b", "16", "1"),
        ("b", "16", "2"),
        ("b", "16", "4"),
        ("b", "64", "1"),
        ("b", "64", "2"),
    ]
    # ITL (1.0 - 0.2) / 9 = 88.9 ms; goodput 1 request in 2 s; statuses http_error .. cancelled.
    assert rows[0] == [
        *("a", "16", "1", "1", "1", "10.0", "10.0", "0.200", "0.200", "88.9", "88.9", "1.000", "1.000"),
        *("0", "0", "0", "0", "0", "0", "0.50", "50% CPU"),
    ]
    assert rows[6][5:7] == ["80.0", "20.0"]  # b, 4 users: 40 tokens in 0.5 s; 10 tokens in 0.5 s each


def test_missing_values_and_flags(report):
    rows = {(r[0], r[1], r[2]): r for r in table(render_markdown(report, []), "## Steps")}
    failed = rows["b", "64", "2"]
    assert failed[3:13] == ["2", "0", "0.0", "-", "-", "-", "-", "-", "-", "-"]  # no OK request: no latencies
    assert failed[13:19] == ["0", "0", "2", "0", "0", "0"] and failed[19] == "0.00"
    assert rows["a", "64", "1"][-1] == "**limited**, load generator CPU at 95% of a core per process"
    assert rows["a", "16", "2"][-1] == (
        "**incomplete step**, no summary was saved for this step (the sweep stopped during it)"
    )
    assert rows["b", "16", "1"][-1] == "1 token-count mismatches"
    assert rows["a", "64", "2"][-1] == "-"


def test_speedup_ratios(report):
    md = render_markdown(report, [])
    assert "## Speed-up" in md and "### b / a" in md
    # Throughput over 10 slices of each window gives an interval even for these few requests (a slice without a
    # token is a sample, not a reason to drop it); latencies of 2-3 requests give none.
    assert table(md, "### b / a") == [
        ["16", "1", "2.0 (1.1–3.7)", "0.50", "0.50"],
        ["16", "2", "2.0 (1.1–3.7)", "0.50", "0.50"],  # against the incomplete step: still compared
        ["64", "1", "2.0 (1.1–3.7)", "0.50", "0.50"],
        ["64", "2", "0.00", "-", "-"],  # b had no OK request: no latency to compare, its 0 has no spread
    ]


def test_speedup_against_a_base_without_throughput_is_a_dash():
    base = step("a", 16, 1, [rec("a", "timeout", ttft=None, tokens=0, server=0)], 1.0)
    other = step("b", 16, 1, [rec("b")], 1.0)
    md = render_markdown(results(base, other, bad_lines=0, slo=SLO()), [])
    assert table(md, "### b / a") == [["16", "1", "-", "-", "-"]]


def test_one_target_has_no_speedup_section():
    md = render_markdown(results(a_step(16, 1), a_step(64, 1), bad_lines=0, slo=SLO(ttft_s=0.5, itl_s=0.05)), [])
    assert "Speed-up" not in md
    assert "TTFT ≤ 0.5 s and ITL ≤ 50 ms" in md
    assert len(table(md, "## Steps")) == 2


def test_speedup_prints_each_ratio_with_its_interval():
    """30 requests a step: b's TTFTs are a's (no clear difference), c's twice a's (a clear 2x)."""
    ttfts = [0.1 + 0.2 * i / 29 for i in range(30)]

    def many(target: str, scale: float) -> list[RequestRecord]:
        return [rec(target, ttft=t * scale, e2e=t * scale + 1.0) for t in ttfts]

    md = render_markdown(
        results(
            step("a", 16, 30, many("a", 1), 2), step("b", 16, 30, many("b", 1), 2), step("c", 16, 30, many("c", 2), 2)
        ),
        [],
    )
    (same,) = table(md, "### b / a")
    (twice,) = table(md, "### c / a")
    assert same[3].startswith("1.0") and same[3].endswith("no clear difference")
    value, interval = twice[3].split(" ", 1)
    low, high = (float(x) for x in interval.strip("()").split("–"))
    assert float(value) == pytest.approx(2.0, abs=0.01) and 1 < low < 2 < high and "no clear" not in twice[3]


def test_trust_line_names_the_disturbed_steps(report):
    report.summaries[2].disturbances.append("other processes took 1.6 cores (0.1 at the run's quietest)")
    first = render_markdown(report, []).splitlines()[0]
    assert first == (
        "Trust: disturbed — a 64 tokens × 1 users: other processes took 1.6 cores (0.1 at the run's quietest)"
    )
