"""The report's "Refused or queued" section: at a step where some targets turned requests away and others admitted
them all, the two kinds of server show the same overload differently. TGI and fastapi-llama refuse beyond
`--max-concurrent-requests` (429, or an overload event in a 200 stream): their error rate grows. vLLM admits every
request and queues it unless it runs with `--max-num-queued-reqs` (then it answers 503): its latency grows instead.
Read side by side without that, a queuing server looks error-free and a refusing one looks fast."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from llm_loadtest.metrics import StepSummary

OPENAI_DIALECTS = ("openai", "openai-chat")


def mixed_steps(summaries: Sequence[StepSummary]) -> list[tuple[int, int, list[StepSummary], list[StepSummary]]]:
    """(max_new_tokens, users, the targets that refused, the targets that admitted every request) of each step
    where both kinds meet, in step order."""
    by_step: dict[tuple[int, int], list[StepSummary]] = defaultdict(list)
    for s in summaries:
        by_step[(s.max_new_tokens, s.users)].append(s)
    out = []
    for (cap, users), group in sorted(by_step.items()):
        refusing = sorted((s for s in group if s.refused), key=lambda s: s.target)
        admitting = sorted((s for s in group if s.requests and not s.refused), key=lambda s: s.target)
        if refusing and admitting:
            out.append((cap, users, refusing, admitting))
    return out


def admission_markdown(summaries: Sequence[StepSummary]) -> list[str]:
    steps = mixed_steps(summaries)
    if not steps:
        return []
    out = [
        "## Refused or queued",
        "",
        "At these steps some targets refused requests before their first token while others admitted every "
        "request: the first show the overload in their error rate, the others in their latency (TTFT and e2e "
        "include the time queued). Compare them on goodput and capacity, not on errors or latency alone.",
    ]
    if any(s.api in OPENAI_DIALECTS for *_, admitting in steps for s in admitting):
        out.append(
            "\nvLLM admits and queues every request unless it runs with `--max-num-queued-reqs` (set it to the "
            "others' `--max-concurrent-requests`; beyond it vLLM answers 503, which counts as refused; "
            "`services/vllm/README.md`)."
        )
    out += ["", "| max_new_tokens | users | refused (requests) | admitted every request |", "|---|---|---|---|"]
    for cap, users, refusing, admitting in steps:
        refused = ", ".join(f"{s.target} ({s.refused})" for s in refusing)
        out.append(f"| {cap} | {users} | {refused} | {', '.join(s.target for s in admitting)} |")
    return [*out, ""]
