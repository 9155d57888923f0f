"""Client against server: counter increases over a step's window from raw samples, when a window is isolated, and
local mode's bench reconciling its records with what a real Prometheus scraped from two synthetic servers, one of
whose metrics leave every 4th request out."""

from __future__ import annotations

import json
import subprocess

from llm_loadtest.client import Target
from llm_loadtest.local import prometheus_config
from llm_loadtest.reconcile import (
    TGI,
    Prometheus,
    StepWindow,
    compare,
    increase,
    isolated,
    less_own,
    own_between,
    quiet_edges,
    read_reconcile,
    reconcile_markdown,
    write_reconcile,
)
from tests.conftest import require_binary
from tests.support.loadgen import synthetic_server
from tests.support.prometheus import prometheus
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
                *("--users", "1,2,3", "--max-new-tokens", "16", "--requests-per-user", "4"),
                *("--results", str(tmp_path)),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    out = (tmp_path / "latest").resolve()
    comparisons, bad = read_reconcile(out)
    assert bad == 0
    raw = [json.loads(line) for line in (out / "reconcile.jsonl").read_text().splitlines()]
    assert len(raw) == len(comparisons) == 2 * 3 * 4  # targets x steps x TGI's four figures
    by = {(c.target, c.users, c.figure): c for c in comparisons}
    # A window is judged only when isolated: a scrape between it and its neighbours, as many requests in flight at
    # both edges. Under load the probes between steps can sit on an edge (the honest server once counted 13 for 12:
    # not isolated, not flagged).
    for users in (1, 2, 3):
        for figure, client in [("requests", 4 * users), ("ok", 4 * users), ("output_tokens", 16 * 4 * users)]:
            honest_c, liar_c = by[("honest", users, figure)], by[("liar", users, figure)]
            assert honest_c.client == liar_c.client == client and not honest_c.flagged, honest_c
            if honest_c.isolated:
                assert (honest_c.server, honest_c.gap) == (client, 0.0), honest_c
            if liar_c.isolated:  # every 4th arrival left out: at least one per 4 in a row
                assert liar_c.server < client and liar_c.flagged, liar_c
            else:
                assert not liar_c.flagged, liar_c
        for target in ("honest", "liar"):  # the mean of what was counted is still right
            e2e = by[(target, users, "e2e_mean_s")]
            assert not e2e.isolated or (abs(e2e.gap) <= 0.1 and not e2e.flagged), e2e
    isolated = {(c.target, c.users) for c in comparisons if c.isolated}
    assert {t for t, _ in isolated} == {"honest", "liar"}, f"no window of a target was isolated: {isolated}"
    liar_flagged = sorted({f"liar {c.figure}" for c in comparisons if c.flagged})
    assert liar_flagged == ["liar ok", "liar output_tokens", "liar requests"]
    assert f"client against server: 24 figures, 3 differing ({', '.join(liar_flagged)})" in run.stdout
    report = (out / "report.md").read_text()
    section = report.split("## Client against server\n", 1)[1]
    assert "figures differ beyond that**: liar ok, liar output_tokens, liar requests." in section


def test_sweep_reconciles_with_a_prometheus_it_did_not_start(tmp_path):
    """`sweep --prometheus URL`, as against the Compose stack's Prometheus: the targets' names are its `server`
    labels. A server whose metrics leave every 4th request out is caught."""
    binary = require_binary("prometheus")
    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=16, extra=["--metrics-skip-every", "4"]) as liar:
        config = prometheus_config([Target("liar", liar)], "127.0.0.1:9", "250ms")  # no load tester to scrape
        with prometheus(binary, config, tmp_path / "prom") as prom:
            Prometheus(prom).wait_scraped("liar", 0.0)
            cmd = [str(VENV_BIN / "llm-loadtest"), "sweep", "--target", f"liar={liar}", "--prometheus", prom]
            cmd += ["--users", "2", "--max-new-tokens", "16", "--requests-per-user", "4", "--out", str(tmp_path / "r")]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    by = {c.figure: c for c in read_reconcile(tmp_path / "r")[0]}
    assert set(by) == {"requests", "ok", "output_tokens", "e2e_mean_s"}
    assert by["requests"].client == 8 and "client against server: 4 figures" in run.stdout
    if by["requests"].isolated:  # a scrape fell between the probes and the step, and after it
        assert by["requests"].server < 8 and by["requests"].flagged, by["requests"]
    assert "## Client against server" in (tmp_path / "r" / "report.md").read_text()


def test_a_target_prometheus_holds_no_series_for_gets_a_row_and_the_others_are_reconciled(tmp_path):
    """`sweep --prometheus URL` with a target its Prometheus does not scrape (or labels otherwise): that target's
    steps say why, at once, and the scraped one is reconciled."""
    binary = require_binary("prometheus")
    with (
        synthetic_server(ttft_ms=20, gap_ms=5, tokens=16) as honest,
        synthetic_server(ttft_ms=20, gap_ms=5, tokens=16) as stray,
    ):
        config = prometheus_config([Target("honest", honest)], "127.0.0.1:9", "250ms")  # stray is not scraped
        with prometheus(binary, config, tmp_path / "prom") as prom:
            Prometheus(prom).wait_scraped("honest", 0.0)
            cmd = [str(VENV_BIN / "llm-loadtest"), "sweep", "--prometheus", prom]
            cmd += ["--target", f"honest={honest}", "--target", f"stray={stray}", "--users", "2"]
            cmd += ["--max-new-tokens", "16", "--requests-per-user", "4", "--out", str(tmp_path / "r")]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    comparisons, bad = read_reconcile(tmp_path / "r")
    assert bad == 0
    honest_rows = {c.figure: c for c in comparisons if c.target == "honest"}
    assert set(honest_rows) == {"requests", "ok", "output_tokens", "e2e_mean_s"}
    assert all(c.missing is None and c.server is not None for c in honest_rows.values()), honest_rows
    (row,) = [c for c in comparisons if c.target == "stray"]  # its one step
    assert (row.figure, row.client, row.server, row.flagged, row.users) == ("requests", 8, None, False, 2)
    assert 'no series labelled server="stray"' in row.missing
    assert "client against server: 4 figures, 0 differing; stray not reconciled: Prometheus" in run.stdout
    section = (tmp_path / "r" / "report.md").read_text().split("## Client against server\n", 1)[1]
    assert "**0 of 4 figures differ beyond that**." in section
    assert "| stray | 16 | 2 | 8 / - (not reconciled) |" in section
    assert 'Not reconciled: stray (Prometheus holds no series labelled server="stray"' in section


def test_unreadable_lines_of_reconcile_jsonl_are_skipped_and_counted(tmp_path):
    """As every results file is read: a line cut short by a kill, or not an object, costs that line alone."""
    window = StepWindow("t", 4, 16, start=10.0, end=12.0, records=[rec() for _ in range(4)])
    good = compare(window, TGI[0], 4.0, None, alone=True)
    write_reconcile(tmp_path, [good, good])
    lines = (tmp_path / "reconcile.jsonl").read_text().splitlines()
    cut = lines[1][: len(lines[1]) // 2]
    (tmp_path / "reconcile.jsonl").write_text("\n".join([lines[0], cut, "[1, 2]", '{"target": "t"}', "", ""]))
    assert read_reconcile(tmp_path) == ([good], 3)
    assert read_reconcile(tmp_path / "nothing-here") == ([], 0)
    section = "\n".join(reconcile_markdown(tmp_path))
    assert "**0 of 1 figures differ beyond that**." in section
    assert "3 unreadable line(s) in reconcile.jsonl were skipped" in section


def test_the_sweeps_own_requests_between_the_scrapes_are_taken_off_the_servers_figures():
    """A probe round of 3 requests between the scrape before a step and its first request: the server counted 15
    for the step's 12; taken off, 12, and its mean e2e is the step's again."""
    step = [rec(start=10.0 + i * 0.1, e2e=0.2, tokens=16) for i in range(12)]
    window = StepWindow("t", 4, 16, start=10.0, end=11.3, records=step)
    probes = [rec(start=9.7 + i * 0.05, e2e=0.04, tokens=16) for i in range(3)]
    late = rec(start=9.4, e2e=0.3, tokens=16)  # in flight at the scrape before: left to the quiet-edge check
    scrapes = [9.5, 9.9, 11.5]  # 9.9 falls after the probes
    assert own_between([*probes, late], "t", scrapes, window) == []
    scrapes = [9.5, 11.5]
    extra = own_between([*probes, late], "t", scrapes, window)
    assert extra == probes
    requests, e2e = TGI[0], TGI[3]
    assert less_own(requests, 15.0, None, extra) == (12.0, None)
    num, den = less_own(e2e, 12 * 0.2 + 3 * 0.04, 15.0, extra)
    assert den == 12 and abs(num / den - 0.2) < 1e-9
    assert compare(window, requests, *less_own(requests, 15.0, None, extra), True, len(extra)).flagged is False
    assert compare(window, requests, 15.0, None, True).flagged is True  # without: a false difference
