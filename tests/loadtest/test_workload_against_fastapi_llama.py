"""Planned workloads sent to the real service by the real load tester: the lengths the server receives and
generates are those asked for, and the same seed sends the same requests in the same order."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llm_loadtest.records import RequestRecord, read_records
from llm_loadtest.workload import PLAN_FILE, read_plan
from tests.support.loadgen import run_locust
from tests.support.servers import VENV_BIN

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "sharegpt-sample.json")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def sweep(url: str, out: Path, *args: str) -> list[RequestRecord]:
    run = subprocess.run(
        [str(VENV_BIN / "llm-loadtest"), "sweep", "--target", f"fastapi={url}", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    records, bad = read_records(out / "requests.jsonl")
    assert not bad and records and {r.status for r in records} == {"ok"}, [r.error for r in records]
    return sorted(records, key=lambda r: r.start)


def test_synthetic_lengths_reach_the_server_and_the_same_seed_sends_the_same_requests(
    naive_server, tiny_model, tokenizer, tmp_path
):
    flags = [
        "--api", "openai", "--users", "2", "--requests", "8", "--warmup", "1",
        "--tokenizer", str(tiny_model), "--input-tokens", "uniform:8:40", "--output-tokens", "uniform:3:12",
        "--prefix-tokens", "4", "--seed", "5", "--num-prompts", "8",
    ]  # fmt: skip
    first = sweep(naive_server.url, tmp_path / "a", *flags)
    plan = read_plan(tmp_path / "a" / PLAN_FILE)
    bos = len(tokenizer.encode("x")) - len(tokenizer.encode("x", add_special_tokens=False))
    for r in first:
        planned = plan[r.workload_index]
        # Input: the server's own count of the prompt it received, less its BOS, is the planned length, which is
        # the one asked for: 4 shared tokens and 8 to 40 more (within one token where a tokenizer merges).
        assert r.server_input_tokens - bos == r.input_tokens == planned.input_tokens
        assert 4 + 8 - 1 <= r.input_tokens <= 4 + 40 + 1
        # Output: sent with ignore_eos, every answer runs to its own cap; the record keeps both.
        assert r.ignore_eos and r.requested_tokens == planned.max_tokens
        assert r.output_tokens == r.server_tokens == r.requested_tokens
    # The step is named by the largest cap planned; the caps differ per request.
    assert {r.max_new_tokens for r in first} == {max(p.max_tokens for p in plan)}
    assert len({r.requested_tokens for r in first}) > 1
    # Sent in the plan's order: request i of the step is entry i.
    assert [r.workload_index for r in first[:8]] == list(range(8))

    second = sweep(naive_server.url, tmp_path / "b", *flags, "--no-report")
    assert (tmp_path / "b" / PLAN_FILE).read_bytes() == (tmp_path / "a" / PLAN_FILE).read_bytes()

    def sent(records: list[RequestRecord]) -> list[tuple]:
        return [(r.workload_index, r.input_tokens, r.requested_tokens, r.output_tokens) for r in records[:8]]

    assert sent(second) == sent(first)
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Prompt and output lengths" in report and "| yes |" in report


def test_sharegpt_conversations_through_locust_to_the_chat_route(naive_server, tiny_model, tokenizer, tmp_path):
    """Locust plans for itself from --dataset (as from the web UI): whole conversations to a chat target, each
    capped at its reply's length."""
    records_file = tmp_path / "records.jsonl"
    run = run_locust(
        naive_server.url,
        records_file,
        "--api", "openai-chat", "--dataset", SAMPLE, "--tokenizer", str(tiny_model), "--seed", "1",
        "--users", "1", "--requests-per-user", "4", "--max-requests", "4", "--run-time", "60s",
    )  # fmt: skip
    records, _ = read_records(records_file)
    assert len(records) == 4 and {r.status for r in records} == {"ok"}, run.stderr[-2000:]
    from llm_loadtest.workload import WorkloadSpec, build_plan

    plan = build_plan(WorkloadSpec(dataset=SAMPLE, tokenizer=str(tiny_model), seed=1), chat=True)
    assert [r.workload_index for r in sorted(records, key=lambda r: r.start)] == [0, 1, 2, 3]
    for r in records:
        planned = plan[r.workload_index]
        templated = tokenizer.apply_chat_template(planned.messages, tokenize=False, add_generation_prompt=True)
        # The server counted the conversation it received, written by the chat template.
        assert r.server_input_tokens == len(tokenizer.encode(templated, add_special_tokens=False))
        assert r.input_tokens == planned.input_tokens
        assert r.requested_tokens == planned.max_tokens == r.output_tokens == r.server_tokens
