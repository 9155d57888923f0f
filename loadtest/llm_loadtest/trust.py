"""Is a run to be trusted: did its conditions stay those it started with?

Three checks, each flagging steps (StepSummary.disturbances) and so the run (`Trust: disturbed — ...`):

- CPU taken by other processes: per step, the machine's busy CPU minus that of the kit's own process tree (the
  sweep, its Locust processes, local mode's servers) and of the targets' processes on this machine (found by their
  listening port), in cores. A step is flagged when it exceeds the run's quietest step by OTHERS_CPU_CORES: a
  change, not a level, so a steady background load (a busy loop left running) does not flag every step.
- Calibration probes: the same short request to every target before the first step, between steps and after the
  last; a probe slower than that target's fastest by PROBE_DRIFT (and PROBE_FLOOR_S) flags the steps beside it.
- Dispersion: a step whose per-slice throughput varies by a coefficient of variation past TOK_S_CV.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from llm_loadtest.metrics import StepSummary

OTHERS_CPU_CORES = 0.75  # a busy loop on one core is 1.0; a test suite running beside moved it by up to 0.64 here
PROBE_DRIFT = 0.25  # pyperf warns at 10 % for a benchmark's runs; one short request is noisier
PROBE_FLOOR_S = 0.005  # below this, a drift is the timer's and the scheduler's, not the run's
TOK_S_CV = 0.5  # 10 slices of a short window: a slice that holds a prefill is legitimately low
PROBE_TOKENS = 16
PROBE_REQUESTS = 3  # per target and probe; the fastest counts (a disturbance slows them all)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Probe:
    """The fastest of PROBE_REQUESTS identical requests to one target, after `after_step` steps had finished."""

    target: str
    after_step: int
    time: float
    ttft_s: float | None
    e2e_s: float | None
    others_cpu: float | None  # cores taken by other processes during the probe round


def append_probe(path: Path, probe: Probe) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(probe)) + "\n")


def read_probes(path: Path) -> list[Probe]:
    if not path.exists():
        return []
    known = {f.name for f in fields(Probe)}
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(Probe(**{k: v for k, v in json.loads(line).items() if k in known}))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a kill
    return out


@dataclass(frozen=True)
class CpuSample:
    time: float
    busy_s: float  # the machine's busy CPU seconds since boot
    ours_s: float  # CPU seconds of the kit's process tree and the targets' processes


def _target_pids(urls: Sequence[str]) -> set[int]:
    """Processes listening on the ports of targets on this machine, with their children."""
    ports = {p.port or 80 for p in map(urlsplit, urls) if p.hostname in LOOPBACK}
    if not ports:
        return set()
    pids: set[int] = set()
    with contextlib.suppress(psutil.Error, OSError):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid:
                pids.add(c.pid)
    for pid in list(pids):
        with contextlib.suppress(psutil.Error):
            pids.update(p.pid for p in psutil.Process(pid).children(recursive=True))
    return pids


def cpu_sample(target_urls: Sequence[str]) -> CpuSample:
    """The machine's busy CPU and ours. Ours: this process, its children alive now and those it has reaped (Locust
    after each step), and the targets' processes; each process counted once."""
    total = psutil.cpu_times()
    busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
    me = psutil.Process()
    mine = me.cpu_times()
    ours = mine.user + mine.system + mine.children_user + mine.children_system
    pids = {p.pid for p in me.children(recursive=True)} | _target_pids(target_urls)
    pids.discard(me.pid)
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            ours += t.user + t.system
    return CpuSample(time.monotonic(), busy, ours)


def others_cores(before: CpuSample, after: CpuSample) -> float | None:
    """Cores taken by processes outside the kit and its targets between two samples."""
    wall = after.time - before.time
    if wall <= 0:
        return None
    return max(0.0, ((after.busy_s - before.busy_s) - (after.ours_s - before.ours_s)) / wall)


def judge(steps: Sequence[StepSummary], probes: Sequence[Probe]) -> None:
    """Fill each step's `disturbances`; `steps` in the order they ran (probe k sat between step k-1 and step k)."""
    # Steps only: a probe round's half second can fall in a lull of a noisy machine and make every step look busy.
    quietest = min((s.others_cpu for s in steps if s.others_cpu is not None), default=None)
    for s in steps:
        if quietest is not None and s.others_cpu is not None and s.others_cpu - quietest >= OTHERS_CPU_CORES:
            s.disturbances.append(
                f"other processes took {s.others_cpu:.1f} cores ({quietest:.1f} at the run's quietest)"
            )
        if s.tok_s_cv is not None and s.tok_s_cv > TOK_S_CV:
            s.disturbances.append(f"throughput varied by {s.tok_s_cv:.0%} (CV) across the step's time slices")
    for p in probes:
        drift = _drift(p, [q for q in probes if q.target == p.target])
        if drift:
            for s in steps[max(0, p.after_step - 1) : p.after_step + 1]:
                s.disturbances.append(f"the probe of {p.target} after step {p.after_step} was {drift}")


def _drift(p: Probe, same_target: Sequence[Probe]) -> str | None:
    for name in ("e2e_s", "ttft_s"):
        value = getattr(p, name)
        best = min((getattr(q, name) for q in same_target if getattr(q, name) is not None), default=None)
        if value is None or best is None or best <= 0:
            continue
        if value > best * (1 + PROBE_DRIFT) and value - best > PROBE_FLOOR_S:
            return f"{value / best - 1:.0%} slower in {name[:-2].upper()} than its fastest ({best * 1000:.0f} ms)"
    return None
