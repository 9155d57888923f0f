"""The report's section on prompt and output lengths: per target and token cap, the output tokens asked for against
those received, and where `ignore_eos` could not be sent (TGI's API), so that engines are compared on tokens
received rather than on caps."""

from __future__ import annotations

from collections.abc import Sequence

from llm_loadtest.metrics import StepSummary


def lengths_markdown(summaries: Sequence[StepSummary]) -> list[str]:
    series: dict[tuple[str, int], list[StepSummary]] = {}
    for s in summaries:
        series.setdefault((s.target, s.max_new_tokens), []).append(s)
    rows = []
    for (target, cap), steps in series.items():
        ok = sum(s.ok for s in steps)
        if not ok:
            continue
        asked = sum(s.requested_tokens for s in steps)
        got = sum(s.output_tokens for s in steps)
        early = sum(s.ended_early for s in steps)
        inputs = [(s.input_tokens_mean, s.requests) for s in steps if s.input_tokens_mean is not None]
        mean_in = sum(m * n for m, n in inputs) / sum(n for _, n in inputs) if inputs else None
        sent = "yes" if all(s.ignore_eos for s in steps) else ("no" if not any(s.ignore_eos for s in steps) else "some")
        rows.append(
            f"| {target} | {steps[0].api} | {cap} | {ok} | {'-' if mean_in is None else f'{mean_in:.1f}'} | "
            f"{asked / ok:.1f} | {got / ok:.1f} | {early} | {sent} |"
        )
    if not rows:
        return []
    out = [
        "## Prompt and output lengths",
        "",
        "Per target and token cap, over its OK requests: prompt tokens (in `--tokenizer`, where given), output tokens "
        "asked for (each request's cap) and received, and how many requests received fewer than they asked for.",
        "",
        "| target | api | max_new_tokens | ok | input tokens (mean) | requested (mean) | received (mean) | "
        "ended early | ignore_eos |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    tgi = sorted({s.target for s in summaries if s.api == "tgi"})
    if tgi:
        out += [
            f"{', '.join(tgi)}: TGI's API has no `ignore_eos`, so {'its' if len(tgi) == 1 else 'their'} answers may "
            "end at EOS before their cap; compare engines on tokens received (output tok/s counts received tokens).",
            "",
        ]
    return out
