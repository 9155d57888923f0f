"""`llm-loadtest sweep` then `llm-loadtest report`: the files, their fields, and figures that match the records."""

from __future__ import annotations

import csv
import json
import re
import subprocess

import numpy as np
import pytest

from llm_loadtest.metrics import measurement_window
from llm_loadtest.records import read_records
from llm_loadtest.results import SCHEMA_VERSION
from tests.support.loadgen import synthetic_server
from tests.support.servers import VENV_BIN

RECORD_FIELDS = {
    "request_id",
    "target",
    "users",
    "max_new_tokens",
    "status",
    "start",
    "ttft_s",
    "e2e_s",
    "itl_s",
    "output_tokens",
    "server_tokens",
    "finish_reason",
}
SUMMARY_FIELDS = {
    "target",
    "users",
    "max_new_tokens",
    "requests",
    "ok",
    "output_tok_s",
    "tok_s_per_user",
    "ttft_p50_s",
    "ttft_p95_s",
    "itl_p50_s",
    "e2e_p50_s",
    "e2e_p95_s",
    "errors",
    "goodput",
    "loadgen_cpu",
}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "llm-loadtest"), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    with (
        synthetic_server(ttft_ms=40, gap_ms=5, tokens=32) as slow,
        synthetic_server(ttft_ms=10, gap_ms=2, tokens=32) as fast,
    ):
        run = cli(
            "sweep",
            "--target",
            f"slow={slow}",
            "--target",
            f"fast={fast}@openai",
            "--users",
            "1,4",
            "--max-new-tokens",
            "16,32",
            "--duration",
            "3s",
            "--out",
            str(out),
        )
    assert run.returncode == 0, run.stdout + run.stderr
    return out, run.stdout


def test_sweep_writes_records_and_summaries(sweep_dir):
    out, stdout = sweep_dir
    assert len(re.findall(r"^\[\d+/8\] ", stdout, re.M)) == 8  # a progress line per step
    records, bad = read_records(out / "requests.jsonl")
    assert bad == 0 and records
    raw = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert set(raw[0]) >= RECORD_FIELDS
    assert {(r.target, r.api) for r in records} == {("slow", "tgi"), ("fast", "openai")}
    assert {r.output_tokens for r in records if r.max_new_tokens == 16} == {16}  # the cap, counted from streams
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema_version"] == SCHEMA_VERSION
    assert len(summary["steps"]) == 8 and set(summary["steps"][0]) >= SUMMARY_FIELDS
    facts = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [(f["target"], f["max_new_tokens"], f["users"]) for f in facts] == [
        (t, m, u) for t in ("slow", "fast") for m in (16, 32) for u in (1, 4)
    ]
    assert all(f["exit_code"] in (0, 1) and 0 < f["loadgen_cpu"] < 2 for f in facts)
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {"timeout", "stream_error", "output_tok_s", "loadgen_cpu"} <= set(rows[0])


def test_run_json_keeps_every_setting_the_host_and_versions(sweep_dir):
    out, _ = sweep_dir
    run = json.loads((out / "run.json").read_text())
    assert run["schema_version"] == SCHEMA_VERSION
    assert run["host"]["cores"] >= 1 and run["host"]["cpu"]
    assert run["versions"]["locust"] and run["versions"]["llm-loadtest"]
    settings = run["settings"]
    assert settings["users"] == [1, 4] and settings["max_new_tokens"] == [16, 32] and settings["duration_s"] == 3
    assert settings["request_timeout_s"] == 300 and settings["warmup_requests"] == 2
    assert settings["retry_pause_s"] == 0.5 and settings["slo"] == {"ttft_s": 2.0, "itl_s": 0.1}
    assert [t["name"] for t in settings["targets"]] == ["slow", "fast"]


def test_report_refuses_results_of_another_schema(sweep_dir, tmp_path):
    out, _ = sweep_dir
    old = tmp_path / "old"
    old.mkdir()
    (old / "requests.jsonl").write_text((out / "requests.jsonl").read_text())
    run = json.loads((out / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**run, "schema_version": 1}))
    refused = cli("report", str(old))
    assert (
        refused.returncode != 0
        and "results schema 1, this llm-loadtest reads 3 and 4" in refused.stderr
        and "Traceback" not in refused.stderr
    )
    assert not (old / "report.md").exists()


def test_report_figures_equal_those_from_the_records(sweep_dir):
    out, _ = sweep_dir
    run = cli("report", str(out))
    assert run.returncode == 0, run.stderr
    report = (out / "report.md").read_text()
    for chart in ("throughput.png", "latency.png", "ttft.png", "itl.png", "errors.png"):
        assert (out / chart).stat().st_size > 5000 and f"({chart})" in report
    assert "### fast / slow" in report
    records, _ = read_records(out / "requests.jsonl")
    for target, cap, users in [("slow", 16, 4), ("fast", 32, 1)]:
        recs = [r for r in records if (r.target, r.max_new_tokens, r.users) == (target, cap, users)]
        wall = max(r.start + r.e2e_s for r in recs) - min(r.start for r in recs)
        begin, end = measurement_window(recs, users)  # every user in flight: no ramp, no drain
        assert 0 < end - begin <= wall
        arrivals = np.concatenate([r.start + r.ttft_s + np.cumsum([0, *r.gaps_s]) for r in recs if r.ok])
        tok_s = np.count_nonzero((arrivals >= begin) & (arrivals <= end)) / (end - begin)
        ttft_p95 = np.percentile([r.ttft_s for r in recs], 95)
        row = next(line for line in report.splitlines() if line.startswith(f"| {target} | {cap} | {users} |"))
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[3] == str(len(recs))
        assert cells[5] == f"{tok_s:.1f}"
        assert cells[8] == f"{ttft_p95:.3f}"


def test_report_renders_again_without_the_load(sweep_dir):
    out, _ = sweep_dir
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert cli("report", str(out)).returncode == 0
    assert (out / "report.md").read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "a=http://127.0.0.1:9", "--users", "1"], "cannot be reached"),
        (["--target", "nourl", "--users", "1"], "expected NAME=URL"),
        (["--target", "a=ftp://x", "--users", "1"], "must start with http"),
        (["--target", "a=http://127.0.0.1:9", "--users", "1,x"], "comma-separated integers"),
        (["--target", "a=http://127.0.0.1:9", "--users", "0"], "positive integers"),
        (["--target", "a=http://127.0.0.1:9", "--prompts", "/nonexistent/prompts.txt"], "cannot read the file"),
    ],
)
def test_bad_inputs_give_one_clear_line(tmp_path, args, message):
    run = cli("sweep", *args, "--out", str(tmp_path / "out"), "--duration", "1s", timeout=60)
    assert run.returncode != 0
    assert message in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_empty_prompts_file_is_refused(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n\n")
    run = cli("sweep", "--target", "a=http://127.0.0.1:9", "--prompts", str(prompts), "--out", str(tmp_path / "o"))
    assert run.returncode != 0 and "no prompts in it" in run.stderr
