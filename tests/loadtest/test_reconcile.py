"""Client against server: counter increases over a step's window from raw samples, when a window is isolated, and
local mode's bench reconciling its records with what a real Prometheus scraped from two synthetic servers, one of
whose metrics leave every 4th request out."""

from __future__ import annotations

import json
import subprocess

from llm_loadtest.reconcile import TGI, StepWindow, compare, increase, isolated, quiet_edges, read_reconcile
from tests.conftest import require_binary
from tests.support.loadgen import synthetic_server
from tests.support.records import rec
from tests.support.servers import VENV_BIN


def test_increase_is_the_first_sample_after_the_window_less_the_last_before_it():
    samples = {
        "a": [(9.0, 5.0), (10.0, 6.0), (11.0, 8.0), (12.0, 9.0), (13.0, 12.0)],
        "b": [(11.5, 2.0), (12.5, 3.0)],  # a series that began inside the window (a new label value): from 0
    }
    assert increase(samples, start=10.5, end=12.2) == 12.0 - 6.0 + 3.0
    assert increase(samples, start=10.5, end=13.5) is None  # not scraped past the end yet
    assert increase({"a": [(1.0, 9.0), (3.0, 2.0)]}, start=2.0, end=2.5) is None  # a restart
    assert increase({}, start=1.0, end=2.0) is None  # no such series


def test_a_window_is_isolated_by_scrapes_between_it_and_its_neighbours():
    window = StepWindow("t", 4, 16, start=10.0, end=12.0, records=[])
    assert isolated([8.0, 9.5, 10.5, 11.5, 12.5], window, prev_end=9.0, next_start=13.0)
    assert not isolated([8.0, 9.5, 10.5, 11.5, 12.5], window, prev_end=9.7, next_start=13.0)
    assert not isolated([8.0, 9.5, 10.5, 11.5, 12.5], window, prev_end=9.0, next_start=12.4)
    assert not isolated([10.5, 11.5, 12.5], window, prev_end=None, next_start=None)  # no scrape before it


def test_a_request_no_record_holds_in_flight_at_an_edge_breaks_the_isolation():
    window = StepWindow("t", 2, 16, start=10.0, end=12.0, records=[])
    scrapes = [9.5, 10.5, 11.5, 12.5]
    arrived = {"": [(9.5, 2.0), (10.5, 4.0), (11.5, 4.0), (12.5, 4.0)]}
    succeeded = {"": [(9.5, 2.0), (10.5, 2.0), (11.5, 3.0), (12.5, 4.0)]}
    assert quiet_edges(scrapes, window, arrived, [succeeded])
    # The next token cap's warm-up arrived before the scrape after the window: one more in flight there.
    late = {"": [*arrived[""][:-1], (12.5, 5.0)]}
    assert not quiet_edges(scrapes, window, late, [succeeded])
    failed = {'{"err": "overloaded"}': [(12.5, 1.0)]}  # ...unless it failed (a refusal, say)
    assert quiet_edges(scrapes, window, late, [succeeded, failed])


def test_a_gap_is_flagged_only_in_an_isolated_window():
    window = StepWindow("t", 4, 16, start=10.0, end=12.0, records=[rec() for _ in range(4)])
    requests = TGI[0]
    assert compare(window, requests, 4.0, None, alone=True).flagged is False
    lying = compare(window, requests, 3.0, None, alone=True)
    assert (lying.gap, lying.isolated, lying.flagged) == (-0.25, True, True)
    assert compare(window, requests, 5.0, None, alone=False).flagged is False
    e2e = TGI[3]  # client mean 1.0 s
    assert compare(window, e2e, 0.95, 1.0, alone=True).flagged is False  # 5 %
    assert compare(window, e2e, 0.8, 1.0, alone=True).flagged is True  # 20 %
    short = StepWindow("t", 4, 16, start=10.0, end=12.0, records=[rec(e2e=0.1) for _ in range(4)])
    assert compare(short, e2e, 0.085, 1.0, alone=True).flagged is False  # 15 %, but 15 ms


def test_bench_sets_each_steps_figures_against_the_servers(tmp_path):
    require_binary("prometheus")
    with (
        synthetic_server(ttft_ms=20, gap_ms=5, tokens=16) as honest,
        synthetic_server(ttft_ms=20, gap_ms=5, tokens=16, extra=["--metrics-skip-every", "4"]) as liar,
    ):
        run = subprocess.run(
            [
                str(VENV_BIN / "llm-loadtest"),
                "bench",
                *("--target", f"honest={honest}", "--target", f"liar={liar}"),
                *("--users", "1,3", "--max-new-tokens", "16", "--requests-per-user", "4"),
                *("--results", str(tmp_path)),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    out = (tmp_path / "latest").resolve()
    comparisons = read_reconcile(out)
    raw = [json.loads(line) for line in (out / "reconcile.jsonl").read_text().splitlines()]
    assert len(raw) == len(comparisons) == 2 * 2 * 4  # targets x steps x TGI's four figures
    by = {(c.target, c.users, c.figure): c for c in comparisons}
    for users in (1, 3):
        for figure, client in [("requests", 4 * users), ("ok", 4 * users), ("output_tokens", 16 * 4 * users)]:
            honest_c = by[("honest", users, figure)]
            assert (honest_c.client, honest_c.server, honest_c.gap) == (client, client, 0.0), honest_c
            assert honest_c.isolated and not honest_c.flagged
            liar_c = by[("liar", users, figure)]  # every 4th arrival left out: at least one per 4 in a row
            assert liar_c.client == client and liar_c.server < client and liar_c.flagged, liar_c
        for target in ("honest", "liar"):  # the mean of what was counted is still right
            e2e = by[(target, users, "e2e_mean_s")]
            assert e2e.isolated and abs(e2e.gap) <= 0.1 and not e2e.flagged, e2e
    assert "client against server: 16 figures, 3 differing (liar ok, liar output_tokens, liar requests)" in run.stdout
    report = (out / "report.md").read_text()
    section = report.split("## Client against server\n", 1)[1]
    assert "**6 of 16 figures differ beyond that**: liar ok, liar output_tokens, liar requests." in section
    assert "| honest | 16 | 3 | 12 / 12 | 12 / 12 | 192 / 192 |" in section
