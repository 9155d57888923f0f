"""Is a run to be trusted: did its conditions stay those it started with?

Three checks, each flagging steps (StepSummary.disturbances) and so the run (`Trust: disturbed — ...`):

- CPU taken by other processes: per step, the machine's busy CPU minus that of the kit's own process tree (the
  sweep, its Locust processes, local mode's servers) and of the targets' processes on this machine (found by their
  listening port), in cores. A step is flagged when it exceeds the run's quietest step by OTHERS_CPU_CORES: a
  change, not a level, so a steady background load (a busy loop left running) does not flag every step.
- Calibration probes: the same short request to every target before the first step, between steps and after the
  last. A step is flagged when the probes on both sides of it are slower than that target's median probe by
  PROBE_DRIFT (and PROBE_FLOOR_S): the condition held through the step. One slow probe is not enough: on a quiet
  machine a 16-token probe of the tiny model ranged over 52-79 ms, and 94-137 ms once, right after the heaviest step.
- Dispersion: a step whose per-slice throughput varies by a coefficient of variation past TOK_S_CV, where its
  window is long enough (DISPERSION_MIN_WINDOW_S) for a slice to hold more than a prefill's pause. Closed-loop
  steps only: an open-loop step's throughput follows its arrivals, which vary by themselves (Poisson: by 1/sqrt(n)
  over a slice of n), so its dispersion says nothing of the run's conditions.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from llm_loadtest import jsonl
from llm_loadtest.metrics import StepSummary

OTHERS_CPU_CORES = 0.75  # a busy loop on one core is 1.0; a test suite running beside moved it by up to 0.64 here
PROBE_DRIFT = 0.5  # pyperf warns at 10 % for a benchmark's runs; one short request is far noisier (see above)
PROBE_FLOOR_S = 0.010  # below this, a drift is the timer's and the scheduler's, not the run's
TOK_S_CV = 0.5  # 10 slices of a window: a slice that holds a prefill is legitimately low
DISPERSION_MIN_WINDOW_S = 5.0  # a naive step of one wave had a 0.7 s window: 70 ms slices, CV 68 % on a quiet run
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
    jsonl.append(path, probe)


def read_probes(path: Path) -> list[Probe]:
    return jsonl.read(path, Probe)


@dataclass(frozen=True)
class CpuSample:
    time: float
    busy_s: float  # the machine's busy CPU seconds since boot
    base_s: float  # this process and the children it has reaped (each step's Locust)
    pids_s: dict[int, float] | None  # per live child and target process; None: a target's CPU cannot be told apart


def _target_pids(urls: Sequence[str]) -> set[int] | None:
    """Processes listening on the ports of targets on this machine, with their children. None when a loopback
    target's listener is not found (another user's process: psutil gives no pid) or is docker-proxy (the server
    runs in a container, not under it): its CPU would be counted as other processes', growing with the load."""
    ports = {p.port or 80 for p in map(urlsplit, urls) if p.hostname in LOOPBACK}
    if not ports:
        return set()
    listeners: dict[int, int] = {}
    with contextlib.suppress(psutil.Error, OSError):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid:
                listeners[c.laddr.port] = c.pid
    if set(listeners) != ports:
        return None
    pids: set[int] = set(listeners.values())
    for pid in list(pids):
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).name() == "docker-proxy":
                return None
            pids.update(p.pid for p in psutil.Process(pid).children(recursive=True))
    return pids


def cpu_sample(target_urls: Sequence[str]) -> CpuSample:
    """The machine's busy CPU and ours: this process, the children it has reaped (Locust after each step), and per
    process its live children and the targets' processes."""
    total = psutil.cpu_times()
    busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
    me = psutil.Process()
    mine = me.cpu_times()
    base = mine.user + mine.system + mine.children_user + mine.children_system
    targets = _target_pids(target_urls)
    if targets is None:
        return CpuSample(time.monotonic(), busy, base, None)
    per_pid: dict[int, float] = {}
    for pid in ({p.pid for p in me.children(recursive=True)} | targets) - {me.pid}:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            per_pid[pid] = t.user + t.system
    return CpuSample(time.monotonic(), busy, base, per_pid)


def others_cores(before: CpuSample, after: CpuSample) -> float | None:
    """Cores taken by processes outside the kit and its targets between two samples; None where a target's CPU
    cannot be told apart. Per process: one that exited in between counts for nothing, not for minus its life."""
    wall = after.time - before.time
    if wall <= 0 or before.pids_s is None or after.pids_s is None:
        return None
    ours = after.base_s - before.base_s
    ours += sum(cpu - before.pids_s.get(pid, 0.0) for pid, cpu in after.pids_s.items())
    return max(0.0, ((after.busy_s - before.busy_s) - ours) / wall)


def judge(steps: Sequence[StepSummary], probes: Sequence[Probe]) -> None:
    """Fill each step's `disturbances`; `steps` in the order they ran (probe k sat between step k-1 and step k)."""
    # Steps only: a probe round's half second can fall in a lull of a noisy machine and make every step look busy.
    quietest = min((s.others_cpu for s in steps if s.others_cpu is not None), default=None)
    for s in steps:
        if quietest is not None and s.others_cpu is not None and s.others_cpu - quietest >= OTHERS_CPU_CORES:
            s.disturbances.append(
                f"other processes took {s.others_cpu:.1f} cores ({quietest:.1f} at the run's quietest)"
            )
        long_enough = s.window_s is not None and s.window_s >= DISPERSION_MIN_WINDOW_S
        if long_enough and not s.open_loop and s.tok_s_cv is not None and s.tok_s_cv > TOK_S_CV:
            s.disturbances.append(f"throughput varied by {s.tok_s_cv:.0%} (CV) across the step's time slices")
    by_target: dict[str, list[Probe]] = {}
    for p in probes:
        by_target.setdefault(p.target, []).append(p)
    for target, own in by_target.items():
        own.sort(key=lambda p: p.after_step)
        for before, after in itertools.pairwise(own):
            drifts = [_drift(before, own), _drift(after, own)]
            step = before.after_step  # probe k ran before step k (0-based) and after step k-1
            if all(drifts) and after.after_step == step + 1 and step < len(steps):
                steps[step].disturbances.append(
                    f"the probes of {target} before and after it were {drifts[0]} and {drifts[1]}"
                )


def _drift(p: Probe, same_target: Sequence[Probe]) -> str | None:
    for name in ("e2e_s", "ttft_s"):
        value = getattr(p, name)
        values = sorted(v for q in same_target if (v := getattr(q, name)) is not None)
        if value is None or not values:
            continue
        median = values[len(values) // 2]
        if median > 0 and value > median * (1 + PROBE_DRIFT) and value - median > PROBE_FLOOR_S:
            return f"{value / median - 1:.0%} slower in {name[:-2].upper()} than its median ({median * 1000:.0f} ms)"
    return None
