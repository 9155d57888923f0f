"""`llm-loadtest capacity`: per target and token cap, search the most concurrent requests that meet the SLO.

Users double from 1 until a probe misses the SLO (or `max_users` is reached), then bisection between the last pass
and the first miss finds the exact count. Each probe is one closed-loop step run by the sweep itself (run_sweep), so
its records, step facts and summaries land in the results directory like any sweep's; `capacity.json` is written
again after each probe, so an interrupted search keeps what it found. With rates, open-loop probes follow, from the
lowest rate up until one misses: the highest that holds is the capacity in requests/s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from llm_loadtest.capacity import CapacitySearch, CapacitySLO, Probe, TargetCapacity
from llm_loadtest.client import Target
from llm_loadtest.records import step_key
from llm_loadtest.results import RunInfo
from llm_loadtest.sweep import SweepConfig, prepare_workload, run_sweep, settings


def bracket_and_bisect(passes: Callable[[int], bool], max_users: int) -> tuple[int, bool]:
    """The most users for which `passes` holds, assuming it holds up to some level and fails above it; and whether
    it held at `max_users`. At most 2·log2(max_users) + 2 calls."""
    best, users = 0, 1
    while passes(users):
        best = users
        if users >= max_users:
            return best, True
        users = min(users * 2, max_users)
    worst = users
    while worst - best > 1:
        mid = (best + worst) // 2
        if passes(mid):
            best = mid
        else:
            worst = mid
    return best, False


@dataclass(frozen=True)
class CapacityConfig:
    sweep: SweepConfig  # the load of each probe; its `users` are ignored, its `rates` probed after the users
    slo: CapacitySLO
    max_users: int = 256


def probe_line(target: str, cap: int, p: Probe) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f} ms"

    verdict = "holds" if p.passed else "misses (" + "; ".join(p.reasons) + ")"
    limited = "  [load generator limited]" if p.loadgen_bottleneck else ""
    load, ttft = (f"users={p.users}", "TTFT p95") if p.rate is None else (f"rate={p.rate:g}/s", "TTFT p95 from due")
    return (
        f"probe {target} max_new_tokens={cap} {load}: {p.requests} requests, {ttft} {ms(p.ttft_p95_s)}, "
        f"ITL p95 {ms(p.itl_p95_s)}, errors {p.error_rate:.1%}: SLO {verdict}{limited}"
    )


def search_target(
    cfg: CapacityConfig,
    target: Target,
    cap: int,
    run: RunInfo,
    found: TargetCapacity,
    save: Callable[[], None],
    progress: Callable[[str], None] = print,
) -> None:
    """Fill `found` with the probes and the capacity of `target` at `cap`, saving after each probe."""

    def probe(users: int, rate: float | None = None) -> bool:
        rates = [] if rate is None else [rate]
        step = replace(cfg.sweep, targets=[target], users=[] if rates else [users], rates=rates, max_new_tokens=[cap])
        summaries = run_sweep(step, progress=lambda _: None, run=run)
        s = next(s for s in summaries if step_key(s) == (target.name, users, cap, rate))
        p = Probe.of(s, cfg.slo)
        found.probes.append(p)
        save()
        progress(probe_line(target.name, cap, p))
        return p.passed

    found.capacity_users, found.at_max_users = bracket_and_bisect(probe, cfg.max_users)
    save()
    if cfg.sweep.rates:
        found.capacity_rate, found.rate_at_max = 0.0, False
        for rate in sorted(cfg.sweep.rates):
            if not probe(0, rate):
                break
            found.capacity_rate = rate
        else:
            found.rate_at_max = True
        save()


def run_capacity(cfg: CapacityConfig, progress: Callable[[str], None] = print) -> CapacitySearch:
    out = cfg.sweep.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, sweep=prepare_workload(cfg.sweep))  # once: every probe sends the same plan
    run = RunInfo(
        {**settings(replace(cfg.sweep, users=[])), "capacity": {"slo": asdict(cfg.slo), "max_users": cfg.max_users}}
    )
    run.write(out)
    search = CapacitySearch(cfg.slo, cfg.max_users, [])
    for target in cfg.sweep.targets:
        for cap in cfg.sweep.max_new_tokens:
            found = TargetCapacity(target.name, target.api, cap, 0, False)
            search.targets.append(found)
            search_target(cfg, target, cap, run, found, lambda: search.write(out), progress)
            bound = "at least " if found.at_max_users else ""
            rate = ""
            if found.capacity_rate is not None:
                rate = f", {'at least ' if found.rate_at_max else ''}{found.capacity_rate:g} requests/s"
            progress(
                f"capacity {target.name} max_new_tokens={cap}: {bound}{found.capacity_users} concurrent requests"
                f"{rate} ({cfg.slo.describe()})"
            )
    return search
