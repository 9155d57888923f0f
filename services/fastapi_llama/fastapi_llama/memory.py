"""Memory evidence for a soak, served only with --debug-memory or --tracemalloc: the resident memory, the Python
allocation sites that grew since the previous look (tracemalloc), and handing the free pages the allocator keeps
back to the OS (glibc's `malloc_trim`, or jemalloc's purge). Together they tell a leak (live memory that keeps
growing) from an allocator that keeps freed memory for reuse (resident memory that a trim gives back)."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import tracemalloc
from dataclasses import dataclass, field

# tracemalloc's own bookkeeping and the import machinery are not the service's memory.
JEMALLOC_ALL_ARENAS = 4096  # MALLCTL_ARENAS_ALL in jemalloc's headers

_NOT_OURS = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


def rss_bytes() -> int:
    """This process's resident memory (Linux: /proc/self/statm; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class SiteGrowth:
    """One allocation site (file:line of the innermost traced frame) and how its live Python memory changed."""

    site: str
    size_diff_bytes: int
    count_diff: int
    size_bytes: int
    count: int


@dataclass(frozen=True)
class MemoryReport:
    rss_bytes: int
    tracing: bool
    traced_bytes: int | None = None  # live memory tracemalloc sees (Python's allocators; not torch's tensors)
    traced_peak_bytes: int | None = None
    top_growth: list[SiteGrowth] = field(default_factory=list)  # since the previous report, largest first


@dataclass(frozen=True)
class TrimResult:
    rss_before_bytes: int
    rss_after_bytes: int
    # malloc_trim: whether some memory went back; jemalloc: whether the purge ran. None: neither allocator.
    released: bool | None


class MemoryProbe:
    """Compares each report's tracemalloc snapshot with the previous one (the first, with the one taken when the
    probe was made, after start-up). A lock keeps two reports from interleaving their snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = self._snapshot()

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot | None:
        return tracemalloc.take_snapshot().filter_traces(_NOT_OURS) if tracemalloc.is_tracing() else None

    def report(self, top: int = 10) -> MemoryReport:
        gc.collect()  # the sites then hold what is alive, not cyclic garbage that the next collection frees
        with self._lock:
            now = self._snapshot()
            if now is None:
                return MemoryReport(rss_bytes(), tracing=False)
            growth = [] if self._last is None else now.compare_to(self._last, "lineno")
            self._last = now
            traced, peak = tracemalloc.get_traced_memory()
        sites = [
            SiteGrowth(f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size_diff, s.count_diff, s.size, s.count)
            for s in growth
            if s.size_diff > 0
        ][:top]
        return MemoryReport(rss_bytes(), True, traced, peak, sites)

    @staticmethod
    def trim() -> TrimResult:
        before = rss_bytes()
        gc.collect()  # cyclic garbage first, so that its memory is free to hand back
        released = release_free_memory()
        return TrimResult(before, rss_bytes(), released)


def release_free_memory() -> bool | None:
    """Hand the allocator's free pages back to the OS: jemalloc's purge of every arena when jemalloc is the
    allocator (LD_PRELOAD), else glibc's malloc_trim(0). None when neither is there (musl, macOS)."""
    libc = ctypes.CDLL(None)
    mallctl = getattr(libc, "mallctl", None)  # only jemalloc defines it
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        return mallctl(f"arena.{JEMALLOC_ALL_ARENAS}.purge".encode(), None, None, None, 0) == 0
    malloc_trim = getattr(libc, "malloc_trim", None)
    if malloc_trim is None:
        return None
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(malloc_trim(0))
