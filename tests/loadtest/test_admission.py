"""The report's "Refused or queued" section, from summaries of hand-made records: where one target refused requests
at a step and another admitted them all (vLLM without an admission limit), the report says so, and names vLLM's
flag when the admitting target speaks the OpenAI dialect."""

from __future__ import annotations

from dataclasses import replace

from llm_loadtest.admission import admission_markdown, mixed_steps
from llm_loadtest.metrics import SLO, StepSummary, summarize
from llm_loadtest.report import render_markdown
from llm_loadtest.results import Results
from tests.support.records import rec


def summary(target: str, api: str, users: int, refused: int, ok: int = 4, cap: int = 64) -> StepSummary:
    records = [rec(start=i, target=target) for i in range(ok)]
    # TGI's and fastapi-llama's refusals: 429 before the first token (and an overload event in a 200 stream).
    records += [
        rec("http_error" if i % 2 else "stream_error", start=i, ttft=None, tokens=0, http_status=429 if i % 2 else 200)
        for i in range(refused)
    ]
    records = [replace(r, users=users, max_new_tokens=cap) for r in records]
    return summarize(records, target=target, api=api, users=users, max_new_tokens=cap, wall_s=10.0)


def test_a_step_where_some_refused_and_others_queued_is_reported():
    summaries = [
        summary("tgi", "tgi", 300, refused=7),
        summary("fastapi", "tgi", 300, refused=3),
        summary("vllm", "openai", 300, refused=0),
        # every target refused, or none did: nothing to say
        summary("tgi", "tgi", 200, refused=2),
        summary("vllm", "openai", 200, refused=1),
        summary("tgi", "tgi", 10, refused=0),
        summary("vllm", "openai", 10, refused=0),
    ]
    steps = mixed_steps(summaries)
    assert [(cap, users, [s.target for s in r], [s.target for s in a]) for cap, users, r, a in steps] == [
        (64, 300, ["fastapi", "tgi"], ["vllm"])
    ]
    text = "\n".join(admission_markdown(summaries))
    assert "| 64 | 300 | fastapi (3), tgi (7) | vllm |" in text
    assert "--max-num-queued-reqs" in text  # an OpenAI-dialect target admitted them all: vLLM's flag is named


def test_no_vllm_hint_when_the_admitting_target_speaks_tgi():
    text = "\n".join(admission_markdown([summary("naive", "tgi", 64, 0), summary("continuous", "tgi", 64, 5)]))
    assert "| 64 | 64 | continuous (5) | naive |" in text and "vLLM" not in text


def test_the_report_holds_the_section_only_where_it_applies():
    mixed = Results([summary("tgi", "tgi", 300, 7), summary("vllm", "openai", 300, 0)], slo=SLO())
    alike = Results([summary("tgi", "tgi", 300, 7), summary("vllm", "openai", 300, 2)], slo=SLO())
    assert "## Refused or queued" in render_markdown(mixed, [])
    assert "## Refused or queued" not in render_markdown(alike, [])
