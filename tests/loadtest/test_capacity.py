"""Capacity: the SLO verdict on a step, the search's bracketing and bisection, the report's capacity table from a
sweep's steps, and `llm-loadtest capacity` finding the known capacity of a synthetic server that slows down past
it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from llm_loadtest.capacity import CapacitySearch, CapacitySLO, capacity_from_steps, misses
from llm_loadtest.capacity_search import bracket_and_bisect
from llm_loadtest.metrics import SLO, summarize
from llm_loadtest.records import read_records
from llm_loadtest.report import render_markdown
from llm_loadtest.results import Results
from tests.support.loadgen import synthetic_server
from tests.support.records import rec
from tests.support.servers import VENV_BIN

SLO_200MS = CapacitySLO(ttft_p95_s=0.2, itl_p95_s=0.1, max_error_rate=0.01)


def step(target: str, users: int, ttft: float, *, errors: int = 0, cap: int = 16, e2e: float = 0.5):
    records = [rec(ttft=ttft, e2e=e2e, target=target) for _ in range(20 - errors)]
    records += [rec("timeout", ttft=None, tokens=0, target=target) for _ in range(errors)]
    return summarize(records, target=target, api="tgi", users=users, max_new_tokens=cap, wall_s=5.0)


def test_a_step_misses_the_slo_on_each_figure_and_says_why():
    assert misses(step("a", 1, 0.1), SLO_200MS) == []
    assert misses(step("a", 1, 0.3), SLO_200MS) == ["TTFT p95 0.300 s > 0.2 s"]
    slow_tokens = step("a", 1, 0.1, e2e=0.1 + 15 * 0.15)  # 10 tokens: gaps of 250 ms
    assert misses(slow_tokens, SLO_200MS) == ["ITL p95 250.0 ms > 100 ms"]
    assert misses(step("a", 1, 0.1, errors=1), SLO_200MS) == ["error rate 5.0% > 1.0%"]
    assert misses(step("a", 1, 0.1, errors=20), SLO_200MS)[0] == "no successful request"
    incomplete = step("a", 1, 0.1)
    incomplete.complete = False
    assert misses(incomplete, SLO_200MS) == ["incomplete step"]


@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 5, 8, 11, 15, 16, 40])
def test_bracketing_then_bisection_finds_the_level_within_few_probes(capacity):
    asked: list[int] = []

    def passes(users: int) -> bool:
        asked.append(users)
        return users <= capacity

    found, at_max = bracket_and_bisect(passes, max_users=16)
    assert (found, at_max) == (min(capacity, 16), capacity >= 16)
    assert len(asked) == len(set(asked)) <= 2 * 4 + 2 and max(asked) <= 16


def test_capacity_from_steps_is_the_run_of_passes_from_the_fewest_users():
    summaries = [
        step("naive", 1, 0.1),
        step("naive", 2, 0.15),
        step("naive", 4, 0.5),
        step("naive", 8, 0.1),  # a pass above a miss: noise, not capacity
        *(step("continuous", u, 0.05) for u in (1, 2, 4, 8)),
        step("naive", 1, 0.1, cap=32),
        step("naive", 2, 0.3, cap=32),
        step("continuous", 1, 0.05, cap=32),
        step("continuous", 2, 0.05, cap=32),
        step("continuous", 4, 0.5, cap=32),
    ]
    found = {
        (c.target, c.max_new_tokens): (c.capacity_users, c.at_max_users)
        for c in capacity_from_steps(summaries, SLO_200MS)
    }
    assert found == {
        ("naive", 16): (2, False),
        ("continuous", 16): (8, True),
        ("naive", 32): (1, False),
        ("continuous", 32): (2, False),
    }
    md = render_markdown(Results(summaries, slo=SLO(ttft_s=0.2, itl_s=0.1)), [])
    section = md.split("## Capacity\n", 1)[1]
    assert "TTFT p95 ≤ 0.2 s, ITL p95 ≤ 100 ms, errors ≤ 1%" in section
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == "| max_new_tokens | naive | continuous | continuous / naive |"
    assert rows[1:] == ["| 16 | 2 | ≥ 8 | ≥ 4.00× |", "| 32 | 1 | 2 | 2.00× |"]


def cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "llm-loadtest"), *args], capture_output=True, text=True, timeout=timeout)


def test_capacity_search_finds_where_the_server_slows_down(tmp_path):
    """The synthetic server slows tenfold (TTFT 50 ms -> 500 ms) once more than 5 requests are in flight: the
    search must answer 5 against a 200 ms TTFT p95 SLO (probes 1, 2, 4 hold, 8 misses, then 6 and 5)."""
    out = tmp_path / "capacity"
    with synthetic_server(ttft_ms=50, gap_ms=5, tokens=16, extra=["--slow-above", "5"]) as url:
        run = cli(
            "capacity",
            "--target",
            f"syn={url}",
            "--max-new-tokens",
            "16",
            "--duration",
            "2s",
            "--warmup",
            "1",
            "--slo-ttft-p95",
            "200ms",
            "--max-users",
            "16",
            "--out",
            str(out),
            timeout=240,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    probes = re.findall(r"^probe syn max_new_tokens=16 users=(\d+): .*SLO (holds|misses)", run.stdout, re.M)
    assert [(int(u), v) for u, v in probes] == [
        (1, "holds"),
        (2, "holds"),
        (4, "holds"),
        (8, "misses"),
        (6, "misses"),
        (5, "holds"),
    ], run.stdout
    assert "capacity syn max_new_tokens=16: 5 concurrent requests" in run.stdout
    # One sweep per probe into one directory: calibration probes are numbered by its steps (0..6 around 6 steps),
    # so that each sits beside the step it ran next to (restarting at 0 they all judged the first step).
    rounds = [json.loads(line)["after_step"] for line in (out / "probes.jsonl").read_text().splitlines()]
    assert rounds == sorted(rounds) and set(rounds) == set(range(7)), rounds
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["slo"] == {"ttft_p95_s": 0.2, "itl_p95_s": 0.1, "max_error_rate": 0.01}
    [found] = doc["targets"]
    assert (found["target"], found["capacity_users"], found["at_max_users"], found["capacity_rate"]) == (
        "syn",
        5,
        False,
        None,
    )
    assert all(p["ttft_p95_s"] > 0.2 for p in found["probes"] if not p["passed"])
    # Every probe's records and step facts are in the results directory, as a sweep's.
    records, bad = read_records(out / "requests.jsonl")
    assert bad == 0 and {r.users for r in records} == {1, 2, 4, 5, 6, 8}
    facts = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [f["users"] for f in facts] == [1, 2, 4, 8, 6, 5]
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["settings"]["capacity"] == {"slo": doc["slo"], "max_users": 16}
    assert CapacitySearch.read(out) is not None
    report = (out / "report.md").read_text()
    assert "Searched by `llm-loadtest capacity`" in report and "| 16 | 5 |" in report
