"""`llm-loadtest report DIR`: report.md and PNG charts from a results directory's raw files (results.load derives
every figure; never Locust's rounded statistics), so the report can be re-rendered at any time without running the
load again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm_loadtest import intervals
from llm_loadtest.admission import admission_markdown
from llm_loadtest.capacity import capacity_markdown
from llm_loadtest.metrics import STATUSES
from llm_loadtest.output_lengths import lengths_markdown
from llm_loadtest.reconcile import reconcile_markdown
from llm_loadtest.results import Ratio, Results, load

# Charts: small pure functions (ax, report) -> None.


def _lines(ax, report: Results, value, ylabel: str, title: str) -> None:
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


def chart_throughput(ax, report: Results) -> None:
    _lines(ax, report, lambda s: s.output_tok_s, "output tokens/s (aggregate)", "Throughput vs concurrent requests")


def chart_latency(ax, report: Results) -> None:
    _lines(ax, report, lambda s: s.e2e_p50_s, "end-to-end latency p50 (s)", "Latency vs concurrent requests")


def chart_ttft(ax, report: Results) -> None:
    _lines(ax, report, lambda s: s.ttft_p50_s, "TTFT p50 (s)", "Time to first token (p50; p95 in the table)")


def chart_itl(ax, report: Results) -> None:
    _lines(
        ax,
        report,
        lambda s: None if s.itl_p50_s is None else s.itl_p50_s * 1000,
        "ITL p50 (ms)",
        "Inter-token latency (p50; p95 in the table)",
    )


def chart_errors(ax, report: Results) -> None:
    _lines(ax, report, lambda s: s.error_rate * 100, "failed requests (%)", "Error rate (by status in the table)")


CHARTS = {
    "throughput.png": chart_throughput,
    "latency.png": chart_latency,
    "ttft.png": chart_ttft,
    "itl.png": chart_itl,
    "errors.png": chart_errors,
}


def render_charts(report: Results, directory: Path) -> list[str]:
    """The charts drawn, or none where matplotlib is missing (gpu-check's offline GPU machine leaves it out)."""
    try:
        import matplotlib
    except ImportError:
        return []

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


def trust_line(report: Results) -> str:
    """The report's first line: whether the run's conditions held, and if not, which steps and why."""
    if report.trusted:
        return "Trust: ok"
    reasons = [
        f"{s.target} {s.max_new_tokens} tokens × {s.users} users: {'; '.join(s.disturbances)}"
        for s in report.summaries
        if s.disturbances
    ]
    return "Trust: disturbed — " + ". ".join(reasons)


def render_markdown(report: Results, charts: Sequence[str], directory: Path | None = None) -> str:
    """`directory`: where the run's other raw files are (capacity.json), when rendering a saved run."""
    out = [trust_line(report), "", "# LLM serving benchmark report", ""]
    out.append(
        f"Every figure below is computed from `requests.jsonl` ({sum(s.requests for s in report.summaries)} "
        f"requests). SLO for goodput: TTFT ≤ {report.slo.ttft_s:g} s and ITL ≤ {report.slo.itl_s * 1000:g} ms."
    )
    if report.run is not None:
        host, versions = report.run.host, report.run.versions
        out.append(
            f"\nRun on {host.get('cpu')} ({host.get('cores')} cores), Python {host.get('python')}; "
            + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
            + "; settings in `run.json`."
        )
        if host.get("gpu"):
            out.append(f"Served on {host['gpu']} ({host.get('gpu_memory_gib', '?')} GiB), CUDA {host.get('cuda')}.")
        if report.run.settings.get("note"):
            out.append(f"\n> {report.run.settings['note']}")
    if report.bad_lines:
        out.append(f"\n{report.bad_lines} unreadable line(s) in requests.jsonl were skipped (a run killed mid-write).")
    out += ["", *[f"![{name[:-4]}]({name})" for name in charts], ""]
    if not charts:
        out += ["No charts: matplotlib is not installed here; `llm-loadtest report DIR` where it is draws them.", ""]
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
    out += ["", *speedup_tables(report), *lengths_markdown(report.summaries)]
    out += extra_sections(report, directory)
    return "\n".join(out) + "\n"


def extra_sections(report: Results, directory: Path | None) -> list[str]:
    """Sections of their own modules: capacity (from the steps, or capacity.json); targets that refused against
    targets that queued at one step; client against server."""
    return [
        *capacity_markdown(report.summaries, report.slo, directory),
        *admission_markdown(report.summaries),
        *reconcile_markdown(directory),
    ]


def speedup_tables(report: Results) -> list[str]:
    """B / A per step, for each pair of targets (the first target is A)."""
    targets = report.targets
    if len(targets) < 2:
        return []
    base = targets[0]
    out = [
        "## Speed-up",
        "",
        f"Each figure is the other target's divided by **{base}**'s at the same step "
        "(throughput: higher is better; latency ratios below 1 are better), with its 95 % interval, bootstrapped "
        "from the two steps' samples; *no clear difference* where that interval holds 1.",
        "",
    ]
    for other in targets[1:]:
        out += [
            f"### {other} / {base}",
            "",
            "| max_new_tokens | users | throughput × | TTFT p50 × | e2e p50 × |",
            "|---|---|---|---|---|",
        ]
        rows = sorted((x for x in report.speedups if x.target == other), key=lambda x: (x.max_new_tokens, x.users))
        for x in rows:
            out.append(
                f"| {x.max_new_tokens} | {x.users} | {_ratio(x.throughput)} | {_ratio(x.ttft_p50)} | "
                f"{_ratio(x.e2e_p50)} |"
            )
        out.append("")
    return out


def _ratio(r: Ratio) -> str:
    if r.value is None:
        return "-"
    ci = None if r.low is None or r.high is None else (r.low, r.high)
    text = intervals.fmt(r.value, ci, most=2)
    return text if ci is None or r.clear else f"{text} no clear difference"


def write_report(directory: Path) -> Path:
    report = load(directory)
    if not any(s.requests for s in report.summaries):
        raise ValueError(f"{directory}: no requests in requests.jsonl")
    charts = render_charts(report, directory)
    path = directory / "report.md"
    path.write_text(render_markdown(report, charts, directory))
    return path
