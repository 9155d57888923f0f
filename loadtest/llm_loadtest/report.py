"""`llm-loadtest report DIR`: report.md and PNG charts from a results directory's raw files (results.load derives
every figure; never Locust's rounded statistics), so the report can be re-rendered at any time without running the
load again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm_loadtest import intervals
from llm_loadtest.admission import admission_markdown
from llm_loadtest.capacity import capacity_markdown
from llm_loadtest.metrics import LATE_AFTER_S, STATUSES, StepSummary
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


def chart_open_loop(ax, report: Results) -> None:
    """e2e p50 against the requests/s completed: the closed loop's steps, and the open loop's from the send and from
    the due time. Past capacity the closed loop's latency stays bounded while the open loop's keeps growing."""
    for color, target in enumerate(report.targets):
        for cap in report.token_caps:
            label, c = f"{target}, {cap} tokens", f"C{color % 10}"
            closed = [s for s in report.series(target, cap) if s.e2e_p50_s is not None]
            opened = [s for s in report.rate_series(target, cap) if s.e2e_from_due_p50_s is not None]
            if closed:
                x = [s.requests_per_s for s in closed]
                ax.plot(x, [s.e2e_p50_s for s in closed], "-", marker="o", color=c, label=f"{label}: closed loop")
            if opened:
                x = [s.requests_per_s for s in opened]
                ax.plot(
                    x, [s.e2e_from_due_p50_s for s in opened], "--", marker="s", color=c, label=f"{label}: from due"
                )
                ax.plot(x, [s.e2e_p50_s for s in opened], ":", marker="^", color=c, label=f"{label}: from send")
    ax.set_xlabel("requests/s completed")
    ax.set_ylabel("end-to-end latency p50 (s)")
    ax.set_title("Latency vs throughput: closed loop and open loop")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


CHARTS = {
    "throughput.png": chart_throughput,
    "latency.png": chart_latency,
    "ttft.png": chart_ttft,
    "itl.png": chart_itl,
    "errors.png": chart_errors,
}
OPEN_LOOP_CHARTS = {"open_loop.png": chart_open_loop}


def render_charts(report: Results, directory: Path) -> list[str]:
    """The charts drawn, or none where matplotlib is missing (gpu-check's offline GPU machine leaves it out): the
    closed loop's where it has steps, and the open loop's against them where there are open-loop steps."""
    try:
        import matplotlib
    except ImportError:
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = {**(CHARTS if report.closed_loop else {}), **(OPEN_LOOP_CHARTS if report.open_loop else {})}
    for name, draw in charts.items():
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        draw(ax, report)
        fig.tight_layout()
        fig.savefig(directory / name)
        plt.close(fig)
    return list(charts)


def _fmt(v: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def _load(s: StepSummary) -> str:
    return f"{s.rate:g} requests/s" if s.rate is not None else f"{s.users} users"


def _flags(s: StepSummary) -> str:
    flags = []
    if s.loadgen_bottleneck:
        flags.append("**limited**")
    elif s.loadgen_cpu is not None:
        flags.append(f"{s.loadgen_cpu:.0%} CPU")
    if not s.complete:
        flags.append("**incomplete step**")
    if s.token_mismatches:
        flags.append(f"{s.token_mismatches} token-count mismatches")
    return ", ".join(flags + s.notes) or "-"


def trust_line(report: Results) -> str:
    """The report's first line: whether the run's conditions held, and if not, which steps and why."""
    if report.trusted:
        return "Trust: ok"
    reasons = [
        f"{s.target} {s.max_new_tokens} tokens × {_load(s)}: {'; '.join(s.disturbances)}"
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
    if report.closed_loop:
        out += closed_loop_table(report)
    out += open_loop_tables(report)
    out += speedup_tables(report)
    out += lengths_markdown(report.summaries)
    out += extra_sections(report, directory)
    return "\n".join(out) + "\n"


def closed_loop_table(report: Results) -> list[str]:
    out = [
        "## Steps",
        "",
        "| target | max_new_tokens | users | requests | ok | output tok/s | tok/s per user | TTFT p50 (s) | "
        "TTFT p95 (s) | ITL p50 (ms) | ITL p95 (ms) | e2e p50 (s) | e2e p95 (s) | "
        + " | ".join(s for s in STATUSES if s != "ok")
        + " | goodput (req/s) | load generator |",
        "|" + "---|" * (15 + len(STATUSES) - 1),
    ]
    for s in sorted(report.closed_loop, key=lambda s: (s.target, s.max_new_tokens, s.users)):
        out.append(
            f"| {s.target} | {s.max_new_tokens} | {s.users} | {s.requests} | {s.ok} | {s.output_tok_s:.1f} | "
            f"{_fmt(s.tok_s_per_user, digits=1)} | {_fmt(s.ttft_p50_s)} | {_fmt(s.ttft_p95_s)} | "
            f"{_fmt(s.itl_p50_s, 1000, 1)} | {_fmt(s.itl_p95_s, 1000, 1)} | {_fmt(s.e2e_p50_s)} | "
            f"{_fmt(s.e2e_p95_s)} | "
            + " | ".join(str(s.errors[k]) for k in STATUSES if k != "ok")
            + f" | {s.goodput:.2f} | {_flags(s)} |"
        )
    return [*out, ""]


def closed_at_same_throughput(report: Results, s: StepSummary, within: float = 0.2) -> StepSummary | None:
    """The closed-loop step of the same target and cap whose completed requests/s is nearest `s`'s, if within
    `within` of it: what a closed loop reports at the throughput an open-loop step got."""
    candidates = [c for c in report.series(s.target, s.max_new_tokens) if c.requests_per_s > 0]
    if not candidates or s.requests_per_s <= 0:
        return None
    nearest = min(candidates, key=lambda c: abs(c.requests_per_s - s.requests_per_s))
    return nearest if abs(nearest.requests_per_s / s.requests_per_s - 1) <= within else None


def open_loop_tables(report: Results) -> list[str]:
    """Open-loop steps: how well the arrivals went out, then latency from the send and from the due time, beside the
    closed loop's at the same throughput."""
    steps = sorted(report.open_loop, key=lambda s: (s.target, s.max_new_tokens, s.rate or 0.0))
    if not steps:
        return []
    settings = report.run.settings if report.run is not None else {}
    process = settings.get("arrival")
    how = f"{process} arrivals, seed {settings.get('seed')}" if process else "arrivals at a rate"
    out = [
        "## Open-loop steps",
        "",
        f"Requests sent at their due times whatever the responses ({how}). *Scheduled*: the arrivals' own rate "
        "(a Poisson schedule differs from the target by 1/√N over N arrivals); *achieved*: the sends' rate. Send "
        f"lag: sent − due; *late*: sent more than {LATE_AFTER_S * 1000:g} ms after due; *not sent*: arrivals "
        "beyond the in-flight bound, or left when the step ended (definitions: docs/metrics.md).",
        "",
        "| target | max_new_tokens | rate (req/s) | scheduled | achieved | sent | not sent | late | "
        "send lag p50 / p99 / max (ms) | completed (req/s) | errors | load generator |",
        "|---" * 12 + "|",
    ]
    for s in steps:
        lags = " / ".join(_fmt(v, 1000, 2) for v in (s.send_lag_p50_s, s.send_lag_p99_s, s.send_lag_max_s))
        out.append(
            f"| {s.target} | {s.max_new_tokens} | {s.rate:g} | {_fmt(s.scheduled_rate, digits=2)} | "
            f"{_fmt(s.achieved_rate, digits=2)} | {s.requests} | {s.not_sent} | {s.late} | {lags} | "
            f"{s.requests_per_s:.2f} | {sum(s.errors.values())} | {_flags(s)} |"
        )
    out += [
        "",
        "Latency from the send is the server's service time; from the due time it adds the send lag — what a user "
        "arriving then saw. The closed loop's figure at the same throughput (its step with the nearest completed "
        "requests/s, within 20 %) stays bounded past capacity, where users wait for their answers before sending "
        "more; the open loop's keeps growing with the queue.",
        "",
        "| target | max_new_tokens | rate (req/s) | TTFT p50 (s) | TTFT p50 from due | TTFT p95 from due | "
        "e2e p50 (s) | e2e p50 from due | e2e p95 from due | closed loop at this throughput: e2e p50 (users) |",
        "|---" * 10 + "|",
    ]
    for s in steps:
        closed = closed_at_same_throughput(report, s)
        beside = "-" if closed is None else f"{_fmt(closed.e2e_p50_s)} ({closed.users} users)"
        out.append(
            f"| {s.target} | {s.max_new_tokens} | {s.rate:g} | {_fmt(s.ttft_p50_s)} | {_fmt(s.ttft_from_due_p50_s)} | "
            f"{_fmt(s.ttft_from_due_p95_s)} | {_fmt(s.e2e_p50_s)} | {_fmt(s.e2e_from_due_p50_s)} | "
            f"{_fmt(s.e2e_from_due_p95_s)} | {beside} |"
        )
    return [*out, ""]


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
