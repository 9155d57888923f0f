"""The docs are checked: the CLI reference is what the parsers print, every relative link resolves (to a file and,
with a #fragment, to one of its headings), README opens with the two set-up commands, and the metric and field
tables name everything the code defines."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
LINKED = [REPO / "README.md", *DOCS, *sorted((REPO / "services").glob("*/README.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", REPO / "docs" / "gen_cli.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    expected = _gen_cli().render()
    actual = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md differs from the parsers' --help: run `make docs`"


def _prose(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for link in links(doc):
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, fragment = link.partition("#")
        dest = (doc.parent / target).resolve() if target else doc
        if not dest.exists():
            broken.append(f"{link}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{link}: no heading #{fragment} in {dest.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_readme_opens_with_the_two_setup_commands() -> None:
    head = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:15])
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", head, re.S)
    assert block, "README.md should open with a code block of the set-up commands"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert "make bench" in commands and "make test" in commands, "README.md opens with `make bench` and `make test`"


def test_metric_tables_name_every_metric() -> None:
    from prometheus_client import CollectorRegistry

    from fastapi_llama.metrics import Counter, ServerMetrics
    from llm_loadtest.exporter import ClientMetrics

    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    server = [m.name for m in ServerMetrics().all()]
    client = [
        f"{m.name}_total" if m.type == "counter" else m.name
        for m in ClientMetrics(CollectorRegistry(), lambda: 0).registry.collect()
    ]
    missing = [name for name in server + client if f"`{name}" not in text]
    assert not missing, f"docs/metrics.md does not describe: {missing}"
    counters = [m.name for m in ServerMetrics().all() if isinstance(m, Counter)]
    assert all(f"`{name}_total`" not in text for name in counters), "TGI's counters have no _total suffix"


def test_results_doc_names_every_field() -> None:
    from llm_loadtest.capacity import CapacitySearch, CapacitySLO, Probe, TargetCapacity
    from llm_loadtest.metrics import StepSummary
    from llm_loadtest.reconcile import Comparison
    from llm_loadtest.records import RequestRecord
    from llm_loadtest.results import RunInfo, StepFacts

    text = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in (
            RequestRecord,
            StepSummary,
            StepFacts,
            RunInfo,
            CapacitySearch,
            CapacitySLO,
            TargetCapacity,
            Probe,
            Comparison,
        )
        for f in fields(cls)
        if f"`{f.name}`" not in text
    ]
    assert not missing, f"docs/results.md does not describe: {missing}"


def test_benchmarks_doc_names_every_soak_flag_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """soak.json's fields and the soak's flags (BENCH_SOAK_ARGS) are described in docs/benchmarks.md."""
    monkeypatch.syspath_prepend(str(REPO / "services" / "fastapi_llama" / "benchmarks"))  # as the script runs
    soak = importlib.import_module("soak")
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    names = [f.name for cls in (soak.SoakResult, soak.Repeat, soak.Site) for f in fields(cls)]
    missing = [n for n in [*names, "missing", "passed"] if f"`{n}`" not in text]
    flags = set(re.findall(r"--[a-z][a-z-]+", soak.build_parser().format_usage()))
    missing += sorted(f for f in flags if f"`{f}" not in text)
    assert not missing, f"docs/benchmarks.md does not describe: {missing}"
