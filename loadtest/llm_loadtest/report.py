"""`llm-loadtest report DIR`: report.md and PNG charts, recomputed from requests.jsonl (never from Locust's
rounded statistics), so the report can be re-rendered at any time without running the load again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_loadtest.metrics import SLO, STATUSES, StepSummary, summarize
from llm_loadtest.records import read_records
from llm_loadtest.sweep import step_records, step_wall


@dataclass
class Report:
    summaries: list[StepSummary]
    bad_lines: int
    slo: SLO

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(s.target for s in self.summaries))

    @property
    def token_caps(self) -> list[int]:
        return sorted({s.max_new_tokens for s in self.summaries})

    def series(self, target: str, max_new_tokens: int) -> list[StepSummary]:
        return sorted(
            (s for s in self.summaries if s.target == target and s.max_new_tokens == max_new_tokens),
            key=lambda s: s.users,
        )


def build(directory: Path) -> Report:
    records, bad = read_records(directory / "requests.jsonl")
    saved = _saved_summaries(directory)
    slo = _saved_slo(directory)
    keys = list(dict.fromkeys((r.target, r.api, r.users, r.max_new_tokens) for r in records))
    summaries = []
    for target, api, users, max_new_tokens in keys:
        recs = step_records(records, target, users, max_new_tokens)
        prior = saved.get((target, users, max_new_tokens), {})
        s = summarize(
            recs,
            target=target,
            api=api,
            users=users,
            max_new_tokens=max_new_tokens,
            wall_s=step_wall(recs),
            slo=slo,
            loadgen_cpu=prior.get("loadgen_cpu"),
        )
        if prior and not prior.get("complete", True):
            s.complete = False
            s.notes += [n for n in prior.get("notes", []) if n not in s.notes]
        if not prior:
            s.complete = False
            s.notes.append("no summary was saved for this step (the sweep stopped during it)")
        summaries.append(s)
    return Report(summaries, bad, slo)


def _saved_summaries(directory: Path) -> dict[tuple[str, int, int], dict]:
    path = directory / "summary.json"
    if not path.exists():
        return {}
    try:
        return {(s["target"], s["users"], s["max_new_tokens"]): s for s in json.loads(path.read_text())}
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}


def _saved_slo(directory: Path) -> SLO:
    try:
        slo = json.loads((directory / "sweep.json").read_text())["slo"]
        return SLO(ttft_s=float(slo["ttft_s"]), itl_s=float(slo["itl_s"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return SLO()


# Charts: small pure functions (ax, report) -> None.


def _lines(ax, report: Report, value, ylabel: str, title: str) -> None:
    styles = ["-", "--", ":", "-."]
    for color, target in enumerate(report.targets):
        for i, cap in enumerate(report.token_caps):
            series = [s for s in report.series(target, cap) if value(s) is not None]
            if series:  # one colour per target, one line style per token cap
                ax.plot(
                    [s.users for s in series],
                    [value(s) for s in series],
                    styles[i % 4],
                    marker="o",
                    color=f"C{color % 10}",
                    label=f"{target}, {cap} tokens",
                )
    ax.set_xlabel("concurrent requests (users)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)  # ratios read right only from zero
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def chart_throughput(ax, report: Report) -> None:
    _lines(ax, report, lambda s: s.output_tok_s, "output tokens/s (aggregate)", "Throughput vs concurrent requests")


def chart_latency(ax, report: Report) -> None:
    _lines(ax, report, lambda s: s.e2e_p50_s, "end-to-end latency p50 (s)", "Latency vs concurrent requests")


def chart_ttft(ax, report: Report) -> None:
    _lines(ax, report, lambda s: s.ttft_p50_s, "TTFT p50 (s)", "Time to first token (p50; p95 in the table)")


def chart_itl(ax, report: Report) -> None:
    _lines(
        ax,
        report,
        lambda s: None if s.itl_p50_s is None else s.itl_p50_s * 1000,
        "ITL p50 (ms)",
        "Inter-token latency (p50; p95 in the table)",
    )


def chart_errors(ax, report: Report) -> None:
    _lines(ax, report, lambda s: s.error_rate * 100, "failed requests (%)", "Error rate (by status in the table)")


CHARTS = {
    "throughput.png": chart_throughput,
    "latency.png": chart_latency,
    "ttft.png": chart_ttft,
    "itl.png": chart_itl,
    "errors.png": chart_errors,
}


def render_charts(report: Report, directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, draw in CHARTS.items():
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        draw(ax, report)
        fig.tight_layout()
        fig.savefig(directory / name)
        plt.close(fig)
    return list(CHARTS)


def _fmt(v: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def render_markdown(report: Report, charts: Sequence[str]) -> str:
    out = ["# LLM serving benchmark report", ""]
    out.append(
        f"Every figure below is computed from `requests.jsonl` ({sum(s.requests for s in report.summaries)} "
        f"requests). SLO for goodput: TTFT ≤ {report.slo.ttft_s:g} s and ITL ≤ {report.slo.itl_s * 1000:g} ms."
    )
    if report.bad_lines:
        out.append(f"\n{report.bad_lines} unreadable line(s) in requests.jsonl were skipped (a run killed mid-write).")
    out += ["", *[f"![{name[:-4]}]({name})" for name in charts], ""]
    out += [
        "## Steps",
        "",
        "| target | max_new_tokens | users | requests | ok | output tok/s | tok/s per user | TTFT p50 (s) | "
        "TTFT p95 (s) | ITL p50 (ms) | ITL p95 (ms) | e2e p50 (s) | e2e p95 (s) | "
        + " | ".join(s for s in STATUSES if s != "ok")
        + " | goodput (req/s) | load generator |",
        "|" + "---|" * (15 + len(STATUSES) - 1),
    ]
    for s in sorted(report.summaries, key=lambda s: (s.target, s.max_new_tokens, s.users)):
        flags = []
        if s.loadgen_bottleneck:
            flags.append("**limited**")
        elif s.loadgen_cpu is not None:
            flags.append(f"{s.loadgen_cpu:.0%} CPU")
        if not s.complete:
            flags.append("**incomplete step**")
        if s.token_mismatches:
            flags.append(f"{s.token_mismatches} token-count mismatches")
        flags += s.notes
        out.append(
            f"| {s.target} | {s.max_new_tokens} | {s.users} | {s.requests} | {s.ok} | {s.output_tok_s:.1f} | "
            f"{_fmt(s.tok_s_per_user, digits=1)} | {_fmt(s.ttft_p50_s)} | {_fmt(s.ttft_p95_s)} | "
            f"{_fmt(s.itl_p50_s, 1000, 1)} | {_fmt(s.itl_p95_s, 1000, 1)} | {_fmt(s.e2e_p50_s)} | "
            f"{_fmt(s.e2e_p95_s)} | "
            + " | ".join(str(s.errors[k]) for k in STATUSES if k != "ok")
            + f" | {s.goodput:.2f} | {', '.join(flags) or '-'} |"
        )
    out += ["", *speedup_tables(report)]
    return "\n".join(out) + "\n"


def speedup_tables(report: Report) -> list[str]:
    """B / A per step, for each pair of targets (the first target is A)."""
    targets = report.targets
    if len(targets) < 2:
        return []
    base = targets[0]
    out = [
        "## Speed-up",
        "",
        f"Each figure is the other target's divided by **{base}**'s at the same step "
        "(throughput: higher is better; latency ratios below 1 are better).",
        "",
    ]
    for other in targets[1:]:
        out += [
            f"### {other} / {base}",
            "",
            "| max_new_tokens | users | throughput × | TTFT p50 × | e2e p50 × |",
            "|---|---|---|---|---|",
        ]
        for cap in report.token_caps:
            a = {s.users: s for s in report.series(base, cap)}
            for s in report.series(other, cap):
                if s.users in a:
                    out.append(
                        f"| {cap} | {s.users} | {_ratio(s.output_tok_s, a[s.users].output_tok_s)} | "
                        f"{_ratio(s.ttft_p50_s, a[s.users].ttft_p50_s)} | "
                        f"{_ratio(s.e2e_p50_s, a[s.users].e2e_p50_s)} |"
                    )
        out.append("")
    return out


def _ratio(b: float | None, a: float | None) -> str:
    return "-" if a in (None, 0) or b is None else f"{b / a:.2f}"


def write_report(directory: Path) -> Path:
    report = build(directory)
    if not report.summaries:
        raise ValueError(f"{directory}: no requests in requests.jsonl")
    charts = render_charts(report, directory)
    path = directory / "report.md"
    path.write_text(render_markdown(report, charts))
    return path
