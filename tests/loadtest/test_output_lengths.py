"""Requested against received output tokens: the step's figures and the report's section, where TGI cannot be
asked for ignore_eos."""

from __future__ import annotations

from dataclasses import replace

from llm_loadtest.metrics import summarize
from llm_loadtest.output_lengths import lengths_markdown
from tests.support.records import rec


def step(records, target="t", api="openai"):
    return summarize(records, target=target, api=api, users=4, max_new_tokens=16, wall_s=1.0)


def test_step_sums_requested_tokens_and_counts_answers_that_ended_early():
    records = [
        replace(rec(tokens=16), requested_tokens=16, ignore_eos=True, input_tokens=30),
        replace(rec(tokens=5), requested_tokens=12, ignore_eos=True, input_tokens=10),  # EOS before its cap
        replace(rec("http_error", tokens=0), requested_tokens=8, ignore_eos=True),  # failed: not counted
    ]
    s = step(records)
    assert (s.requested_tokens, s.output_tokens, s.ended_early) == (28, 21, 1)
    assert s.input_tokens_mean == 20.0 and s.ignore_eos


def test_records_without_a_requested_cap_asked_for_the_steps():
    s = step([rec(tokens=10), rec(tokens=16)])  # written before requested_tokens: the step's cap, 16
    assert (s.requested_tokens, s.ended_early, s.input_tokens_mean, s.ignore_eos) == (32, 1, None, False)


def test_report_section_per_target_and_the_tgi_note():
    vllm = step([replace(rec(tokens=16), requested_tokens=16, ignore_eos=True, input_tokens=40)] * 2, "vllm")
    tgi = step([replace(rec(tokens=6, target="tgi"), requested_tokens=16)] * 2, "tgi", api="tgi")
    text = "\n".join(lengths_markdown([vllm, tgi]))
    assert "| vllm | openai | 16 | 2 | 40.0 | 16.0 | 16.0 | 0 | yes |" in text
    assert "| tgi | tgi | 16 | 2 | - | 16.0 | 6.0 | 2 | no |" in text
    assert "tgi: TGI's API has no `ignore_eos`" in text and "compare engines on tokens received" in text
    assert "TGI's API" not in "\n".join(lengths_markdown([vllm]))


def test_no_section_without_ok_requests():
    assert lengths_markdown([step([rec("timeout", tokens=0)])]) == []
