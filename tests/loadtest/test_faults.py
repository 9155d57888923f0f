"""Faults a real benchmark run meets: the server dies mid-sweep (and may come back), the load tester is killed,
the server stalls, the load tester stops its own users. Nothing that finished is lost; nothing hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from llm_loadtest.records import read_records
from tests.support.loadgen import run_locust, start_synthetic_server, synthetic_server
from tests.support.servers import VENV_BIN, free_port, stop
from tests.support.waits import wait_until


def start_sweep(out: Path, url: str, *args: str) -> subprocess.Popen:
    cmd = [str(VENV_BIN / "llm-loadtest"), "sweep", "--target", f"s={url}", "--out", str(out), "--warmup", "1", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_records(path: Path, at_least: int, status: str | None = None, timeout: float = 60) -> None:
    """Until `path` holds `at_least` records (of `status`, if given); otherwise fail with the count and the
    step's Locust log (written next to the records)."""

    def count() -> int:
        return sum(status in (None, r.status) for r in read_records(path)[0])

    wait_until(
        count,
        lambda n: n >= at_least,
        timeout=timeout,
        what=f"{at_least} {status + ' ' if status else ''}records in {path}",
        show=lambda n: f"{n} records",
        log=(path.parent / "locust.log").read_text,
    )


def summaries(out: Path) -> dict[int, dict]:
    return {s["users"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}


def every_line_parses(path: Path) -> int:
    lines = path.read_text().splitlines()
    for line in lines:
        json.loads(line)
    return len(lines)


def sweep_through_a_kill(out: Path, reconnect_wait: str, back_after_errors: int | None) -> tuple[int, str, str]:
    """A sweep of two steps (2 then 3 users, 5 s each) whose server is SIGKILLed once 5 requests have finished,
    and restarted on the same port once the users have met `back_after_errors` connection errors (or never)."""
    port = free_port()
    server = start_synthetic_server(port, ttft_ms=20, gap_ms=5, tokens=32)
    url = f"http://127.0.0.1:{port}"
    sweep = start_sweep(out, url, "--users", "2,3", "--duration", "5s", "--reconnect-wait", reconnect_wait)
    try:
        wait_for_records(out / "requests.jsonl", 5)
        stop(server, signal.SIGKILL)
        if back_after_errors is not None:
            # The outage is over once the users have seen it and retried: a fixed pause could end before either.
            wait_for_records(out / "requests.jsonl", back_after_errors, status="connection_error")
            server = start_synthetic_server(port, ttft_ms=20, gap_ms=5, tokens=32)
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        stop(sweep)
        stop(server)
    return sweep.returncode, stdout, stderr


def test_server_killed_mid_sweep_then_back(tmp_path):
    # 4 errors from 2 users: the requests the kill cut or refused, and at least one retry after its pause.
    code, stdout, stderr = sweep_through_a_kill(tmp_path, "30s", back_after_errors=4)
    assert code == 0, stdout + stderr
    steps = summaries(tmp_path)
    hit, after = steps[2], steps[3]
    assert not hit["complete"] and hit["errors"]["connection_error"] >= 1
    assert any("connection errors" in n for n in hit["notes"])
    assert hit["ok"] >= 5, "records finished before the kill are kept"
    assert hit["errors"]["connection_error"] >= 4, "the errors seen before the server came back are kept"
    # Refused connections are retried after a growing pause, not in a tight loop.
    assert hit["errors"]["connection_error"] <= 2 * 2 * 3
    assert after["complete"] and after["ok"] > 0 and after["errors"]["connection_error"] == 0
    assert every_line_parses(tmp_path / "requests.jsonl") == hit["requests"] + after["requests"]
    assert "incomplete step" in (tmp_path / "report.md").read_text()


def test_server_killed_for_good_stops_the_sweep_with_one_line(tmp_path):
    code, stdout, stderr = sweep_through_a_kill(tmp_path, "2s", back_after_errors=None)
    assert code != 0
    assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr, stderr
    assert "went away" in stderr and "did not answer within 2s" in stderr
    steps = summaries(tmp_path)
    assert list(steps) == [2] and not steps[2]["complete"] and steps[2]["ok"] >= 5
    assert "report:" in stdout and (tmp_path / "report.md").exists(), "what finished is still reported"


def test_load_tester_killed_mid_step_leaves_valid_records(tmp_path):
    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=32) as url:
        sweep = start_sweep(tmp_path, url, "--users", "4,8", "--duration", "30s")
        try:
            wait_for_records(tmp_path / "requests.jsonl", 20)
            os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its Locust, no chance to clean up
            sweep.wait(10)
        finally:
            stop(sweep)
    records, bad = read_records(tmp_path / "requests.jsonl")
    assert bad == 0 and every_line_parses(tmp_path / "requests.jsonl") == len(records) >= 20
    report = subprocess.run(
        [str(VENV_BIN / "llm-loadtest"), "report", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report.md").read_text()
    assert f"({len(records)} requests)" in text
    assert "no summary was saved for this step" in text


def test_stalled_server_times_out_at_the_request_timeout(tmp_path):
    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=32, behavior="stall") as url:
        t0 = time.monotonic()
        sweep = start_sweep(tmp_path, url, "--users", "3", "--duration", "2s", "--request-timeout", "1s")
        try:
            stdout, stderr = sweep.communicate(timeout=120)
        finally:
            stop(sweep)
        wall = time.monotonic() - t0
    assert sweep.returncode == 0, stdout + stderr
    records, _ = read_records(tmp_path / "requests.jsonl")
    assert records and {r.status for r in records} == {"timeout"}
    # Each request ended at its own 1 s deadline: the error says so, and its time is the deadline's (well under
    # the 5 s of grace Locust gives a stopping user, the next thing that could have ended it).
    assert all(r.error == "no end after 1s" and 1.0 <= r.e2e_s < 2.0 for r in records), [
        (r.error, r.e2e_s) for r in records
    ]
    assert all(r.output_tokens == 1 for r in records), "the token sent before the stall is still counted"
    # Nothing waited on the stalled connections: the step ran its 2 s and was not stopped at its deadline
    # (2 s + 1 s + 60 s), and the sweep, start-up and report included, ended long before that deadline.
    (step,) = summaries(tmp_path).values()
    assert step["complete"] and not any("deadline" in n for n in step["notes"]), step["notes"]
    assert wall < 45, f"a stalled server held the sweep for {wall:.0f}s"


def test_requests_cut_by_the_load_testers_own_stop_are_recorded_as_cancelled(tmp_path):
    records_path = tmp_path / "requests.jsonl"
    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=32, behavior="stall") as url:
        # Users stop after 2 s and get 1 s to finish their request; a 60 s timeout cannot fire first.
        run = run_locust(
            url,
            records_path,
            "-u",
            "3",
            "-r",
            "100",
            "-t",
            "2s",
            "--stop-timeout",
            "1s",
            "--request-timeout",
            "60",
            timeout=60,
        )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    records, bad = read_records(records_path)
    assert bad == 0
    assert Counter(r.status for r in records) == {"cancelled": 3}
    assert all(1.5 <= r.e2e_s < 10 and r.output_tokens == 1 for r in records), [
        (r.e2e_s, r.output_tokens) for r in records
    ]


def test_a_locust_worker_lost_mid_step_flags_the_step(tmp_path):
    """One of the sweep's two Locust processes dies (SIGKILL): the master notices when its heartbeats stop, the
    step is flagged (its requests in flight have no record) and what finished is kept."""
    import psutil

    with synthetic_server(ttft_ms=20, gap_ms=5, tokens=32) as url:
        sweep = start_sweep(tmp_path, url, "--users", "4", "--duration", "10s", "--processes", "2")
        try:
            wait_for_records(tmp_path / "requests.jsonl", 10)
            master = next(p for p in psutil.Process(sweep.pid).children() if "locust" in " ".join(p.cmdline()))
            worker = master.children()[0]
            worker.kill()
            stdout, stderr = sweep.communicate(timeout=90)
        finally:
            stop(sweep)
    assert sweep.returncode == 0, stdout + stderr
    step = summaries(tmp_path)[4]
    assert not step["complete"] and step["ok"] >= 10, step
    assert any("Locust worker was lost" in n for n in step["notes"]), step["notes"]
    assert "lost (no heartbeat)" in (tmp_path / "locust.log").read_text()
