"""Open loop without a server: the arrival schedules, and the figures, capacity and report derived from open-loop
records made by hand (due, sent, not sent)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from llm_loadtest.arrivals import Schedule
from llm_loadtest.capacity import CapacitySLO, capacity_from_steps, capacity_tables, misses
from llm_loadtest.metrics import LATE_AFTER_S, summarize
from llm_loadtest.records import RequestRecord, Status
from llm_loadtest.report import render_markdown
from llm_loadtest.results import Results
from llm_loadtest.trust import judge
from tests.support.records import rec


def offsets(schedule: Schedule, n: int) -> list[float]:
    return [schedule.pop() for _ in range(n)]


def test_constant_arrivals_are_evenly_spaced_and_generators_interleave():
    assert offsets(Schedule(8.0, "constant"), 5) == [k / 8 for k in range(5)]
    # Three generators sharing 9 requests/s: each sends 3/s, and together they send every 1/9 s.
    merged = sorted(itertools.chain(*(offsets(Schedule(9.0, "constant", index=i, generators=3), 30) for i in range(3))))
    assert np.allclose(np.diff(merged), 1 / 9)


def test_poisson_arrivals_are_seeded_with_exponential_gaps_at_the_rate():
    n, rate = 20_000, 50.0
    a = offsets(Schedule(rate, "poisson", seed=7), n)
    assert a == offsets(Schedule(rate, "poisson", seed=7), n)  # one seed, the same due times
    assert a != offsets(Schedule(rate, "poisson", seed=8), n)
    assert a[:50] != offsets(Schedule(rate, "poisson", seed=7, index=1, generators=2), 50)  # generators differ
    gaps = np.diff([0.0, *a])
    # The mean gap is 1/rate within 4 standard errors; exponential gaps have a coefficient of variation of 1.
    assert abs(gaps.mean() * rate - 1) < 4 / np.sqrt(n)
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05
    assert np.all(gaps > 0)


@pytest.mark.parametrize("bad", [{"rate": 0.0}, {"rate": 5.0, "index": 2, "generators": 2}, {"process": "burst"}])
def test_a_schedule_refuses_what_it_cannot_draw(bad):
    with pytest.raises(ValueError):
        Schedule(**{"rate": 1.0, **bad})


def arrival(due: float, lag: float | None, *, e2e: float = 0.5, ttft: float = 0.1, rate: float = 10.0):
    """An open-loop record: sent `lag` after `due`, or not sent (lag None)."""
    if lag is None:
        r = rec("not_sent", start=due, ttft=None, e2e=0.0, tokens=0, http_status=None)
        return replace(r, users=0, due=due, rate=rate, error="in-flight bound of 2 reached")
    return replace(rec(start=due + lag, ttft=ttft, e2e=e2e), users=0, due=due, rate=rate)


def open_step(records: list[RequestRecord], rate: float = 10.0, **kw):
    wall = max(r.start + r.e2e_s for r in records) - min(r.start for r in records)
    return summarize(records, target="t", api="tgi", users=0, max_new_tokens=16, wall_s=wall, rate=rate, **kw)


def test_open_loop_figures_from_known_records():
    # 11 arrivals due every 0.1 s: 9 sent 1 ms late, one 30 ms late, one not sent.
    lags = [0.001] * 9 + [0.030, None]
    records = [arrival(k / 10, lag) for k, lag in enumerate(lags)]
    s = open_step(records)
    assert (s.rate, s.requests, s.ok, s.not_sent, s.late) == (10.0, 10, 10, 1, 1)
    assert Status.NOT_SENT.value not in s.errors and s.error_rate == 0  # an arrival not sent is no failed request
    assert s.scheduled_rate == pytest.approx(10 / 1.0)  # 11 due times over 1 s
    sends = sorted(r.start for r in records[:10])
    assert s.achieved_rate == pytest.approx(9 / (sends[-1] - sends[0]))
    assert s.send_lag_p50_s == pytest.approx(0.001) and s.send_lag_max_s == pytest.approx(0.030)
    assert s.send_lag_p99_s == pytest.approx(np.percentile(lags[:10], 99))
    # From the due time: the lag added to each sent request's TTFT and e2e.
    assert s.ttft_from_due_p50_s == pytest.approx(0.101) and s.e2e_from_due_p50_s == pytest.approx(0.501)
    assert s.ttft_p50_s == pytest.approx(0.1) and s.e2e_p50_s == pytest.approx(0.5)
    # One late request in ten is beyond the 1 % a step may have before it describes the generator.
    assert s.loadgen_bottleneck and any("more than" in n and "after due" in n for n in s.notes)
    assert "1 arrivals not sent" in s.notes
    on_time = open_step([arrival(k / 10, 0.001) for k in range(11)])
    assert not on_time.loadgen_bottleneck and on_time.late == 0 and on_time.not_sent == 0
    assert LATE_AFTER_S < 0.030


def test_closed_loop_records_have_no_open_loop_figures():
    s = summarize([rec(), rec()], target="t", api="tgi", users=2, max_new_tokens=16, wall_s=1.0)
    assert s.rate is None and not s.open_loop and s.send_lag_p99_s is None and s.ttft_from_due_p50_s is None
    assert rec().send_lag_s is None and rec().e2e_from_due_s is None


def test_capacity_rate_is_the_highest_rate_whose_due_latency_meets_the_slo():
    slo = CapacitySLO(ttft_p95_s=0.2, itl_p95_s=0.1, max_error_rate=0.01)

    def at(rate: float, ttft: float, lag: float = 0.001, unsent: int = 0):
        records = [arrival(k / rate, lag, ttft=ttft, rate=rate) for k in range(20)]
        records += [arrival(20 / rate + k, None, rate=rate) for k in range(unsent)]
        return open_step(records, rate)

    # TTFT from the send meets the SLO at 8/s, but the generator sent 150 ms late: from the due time it misses.
    assert misses(at(8, 0.1, lag=0.15), slo) == ["TTFT p95 from due 0.250 s > 0.2 s"]
    assert misses(at(8, 0.1, unsent=1), slo) == ["1 arrivals not sent"]
    steps = [at(2, 0.05), at(4, 0.1), at(8, 0.3), at(16, 0.1)]  # 16/s holds again: noise above a miss
    closed = summarize([rec(ttft=0.1)] * 5, target="t", api="tgi", users=3, max_new_tokens=16, wall_s=1.0)
    [found] = capacity_from_steps([*steps, closed], slo)
    assert (found.capacity_rate, found.rate_at_max, found.capacity_users, found.at_max_users) == (4, False, 3, True)
    table = "\n".join(capacity_tables([found]))
    assert "| 16 | ≥ 3 |" in table and "| 16 | 4 |" in table and "requests/s under open-loop load" in table


def test_report_shows_open_loop_steps_beside_the_closed_loop_at_the_same_throughput():
    closed = [replace(rec(start=k * 0.25, ttft=0.05, e2e=0.25), users=1) for k in range(8)]  # 4 requests/s
    closed_step = summarize(closed, target="t", api="tgi", users=1, max_new_tokens=16, wall_s=2.0)
    # Open loop at 6/s against a server that completes 4/s: the queue, and so the latency from due, grows.
    opened = [arrival(k / 6, 0.001, e2e=0.25 + 0.1 * k, ttft=0.05 + 0.1 * k, rate=6.0) for k in range(12)]
    open_s = open_step(opened, 6.0)
    assert closed_step.requests_per_s == pytest.approx(4.0) and open_s.requests_per_s == pytest.approx(4.0, rel=0.2)
    md = render_markdown(Results([closed_step, open_s], run=None), [])
    section = md.split("## Open-loop steps\n", 1)[1]
    closed_table = md.split("## Steps\n", 1)[1].split("## ", 1)[0]
    rows = [line for line in closed_table.splitlines() if line.startswith("| t |")]
    assert len(rows) == 1 and rows[0].startswith("| t | 16 | 1 | 8 |")  # only the closed-loop step
    row = next(line for line in section.splitlines() if line.startswith("| t | 16 | 6 |") and "users)" in line)
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[7] == f"{open_s.e2e_from_due_p50_s:.3f}" and cells[9] == f"{closed_step.e2e_p50_s:.3f} (1 users)"
    assert float(cells[7]) > 2 * float(cells[9].split()[0])


def test_an_open_loop_steps_dispersion_is_its_arrivals_not_a_disturbance():
    """Trust's dispersion check judges closed-loop steps: open-loop throughput varies with its (Poisson) arrivals."""
    closed = summarize([rec(), rec()], target="t", api="tgi", users=2, max_new_tokens=16, wall_s=10.0)
    opened = open_step([arrival(k, 0.001) for k in range(10)])
    for s in (closed, opened):
        s.window_s, s.tok_s_cv = 10.0, 0.9
    judge([closed, opened], [])
    assert closed.disturbances and not opened.disturbances
