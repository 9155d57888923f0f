"""A disturbed run is flagged: two busy loops (a CPU hog on 2 cores) run through the middle steps of a real sweep
against the synthetic server; the report names those steps, and the same sweep run quietly says `Trust: ok`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from llm_loadtest.metrics import StepSummary, summarize
from llm_loadtest.results import SCHEMA_VERSION
from llm_loadtest.trust import CpuSample, Probe, _target_pids, judge, others_cores
from tests.support.loadgen import synthetic_server
from tests.support.records import rec
from tests.support.servers import VENV_BIN, free_port, stop
from tests.support.waits import wait_until

HOG = "while True: pass"


def sweep(out: Path, url: str) -> subprocess.Popen:
    cmd = [str(VENV_BIN / "llm-loadtest"), "sweep", "--target", f"s={url}", "--users", "1,2,3,4"]
    cmd += ["--max-new-tokens", "32", "--duration", "3s", "--warmup", "1", "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def steps_done(out: Path) -> int:
    path = out / "steps.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def run(out: Path, hog_steps: tuple[int, int] | None) -> tuple[str, dict]:
    """The sweep; with `hog_steps` (first, last), two busy loops start once the step before `first` has ended and
    are killed once `last` has ended."""
    with ExitStack() as stack, synthetic_server(ttft_ms=20, gap_ms=5, tokens=32) as url:
        proc = sweep(out, url)
        stack.callback(stop, proc)
        if hog_steps:
            first, last = hog_steps
            wait_until(lambda: steps_done(out), lambda n: n >= first - 1, timeout=60, what=f"step {first - 1}")
            hogs = [subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True) for _ in range(2)]
            for hog in hogs:
                stack.callback(stop, hog)
            wait_until(lambda: steps_done(out), lambda n: n >= last, timeout=60, what=f"step {last}")
            for hog in hogs:
                stop(hog)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    return (out / "report.md").read_text(), json.loads((out / "summary.json").read_text())


def test_a_cpu_hog_through_part_of_a_sweep_flags_those_steps(tmp_path):
    report, summary = run(tmp_path / "hog", hog_steps=(2, 3))
    cpu = {s["users"]: s["others_cpu"] for s in summary["steps"]}
    flagged = {s["users"] for s in summary["steps"] if any("other processes" in d for d in s["disturbances"])}
    if cpu[1] > (os.cpu_count() or 2) - 1.0:  # less than a core free before the hog: it had nothing to take
        pytest.skip(f"the machine was saturated before the hog (other processes: {cpu[1]:.1f} cores)")
    assert flagged == {2, 3}, cpu
    assert not summary["trusted"]
    first = report.splitlines()[0]
    assert first.startswith("Trust: disturbed — ") and "32 tokens × 2 users: other processes took" in first


def test_the_same_sweep_run_quietly_is_trusted(tmp_path):
    """Quiet is the kit's own quiet: a suite running beside it can move other processes' CPU past the threshold at
    a bad moment, so a second run is allowed; flagged twice is a failure."""
    report, summary = run(tmp_path / "quiet", hog_steps=None)
    if not summary["trusted"]:
        report, summary = run(tmp_path / "quiet-again", hog_steps=None)
    assert report.splitlines()[0] == "Trust: ok", [
        (s["users"], s["others_cpu"], s["disturbances"]) for s in summary["steps"]
    ]
    assert summary["trusted"] and summary["schema_version"] == SCHEMA_VERSION


def _steps(n: int) -> list[StepSummary]:
    return [
        summarize([rec()], target="t", api="tgi", users=1, max_new_tokens=16, wall_s=1.0, live=True) for _ in range(n)
    ]


def _probes(e2e_ms: list[float]) -> list[Probe]:
    return [Probe("t", k, float(k), 0.008, ms / 1000, 0.0) for k, ms in enumerate(e2e_ms)]


def test_probes_flag_a_slowdown_that_lasts_a_step_not_one_slow_probe():
    """The quiet run's own probes (52-79 ms, one 137 ms right after its heaviest step) flag nothing; probes at twice
    the median on both sides of a step flag that step, and only it."""
    quiet = [61, 68, 73, 70, 58, 65, 66, 52, 62, 66, 69, 72, 70, 73, 72, 72, 79, 68, 77, 107, 74, 69, 137, 92, 76]
    steps = _steps(len(quiet) - 1)
    judge(steps, _probes(quiet))
    assert not any(s.disturbances for s in steps)
    slowed = [61, 68, 73, 150, 160, 65, 66]  # probes 3 and 4 slow: the step between them (index 3)
    steps = _steps(len(slowed) - 1)
    judge(steps, _probes(slowed))
    assert [i for i, s in enumerate(steps) if s.disturbances] == [3]
    assert "before and after it" in steps[3].disturbances[0]


def test_others_cpu_per_process_and_unknown_targets():
    """A server that exits between two samples counts for nothing (summed whole it read as +10 cores for a
    300 CPU-second process over 30 s); a target whose CPU cannot be told apart gives no figure, not a wrong one."""
    before = CpuSample(0.0, busy_s=1000.0, base_s=10.0, pids_s={1: 300.0, 2: 5.0})
    after = CpuSample(30.0, busy_s=1030.0, base_s=12.0, pids_s={2: 20.0, 3: 4.0})  # 1 exited, 3 started
    assert others_cores(before, after) == (30.0 - 2.0 - 15.0 - 4.0) / 30.0
    assert others_cores(before, CpuSample(30.0, 1030.0, 12.0, None)) is None


def test_a_target_behind_docker_proxy_or_unseen_is_not_attributed():
    assert _target_pids(["http://gpu-host:8080"]) == set()  # not on this machine: nothing to attribute
    port = free_port()  # nothing listens there: whose CPU it is cannot be known
    assert _target_pids([f"http://127.0.0.1:{port}"]) is None
