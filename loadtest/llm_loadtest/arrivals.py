"""When open-loop requests are due: a constant rate or a Poisson process, seeded, independent of any response.

A schedule yields offsets in seconds from its start. Constant: every 1/rate, computed as k/rate so that rounding
never accumulates. Poisson: exponential gaps of mean 1/rate from a seeded generator, so two runs with one seed send
at the same offsets. Several generators share one rate (Locust users, processes): each takes rate/n with its own
`index` — a phase of index/rate for constant arrivals, which interleaves them into one evenly spaced stream, and a
seed of its own for Poisson ones, whose sum is again a Poisson process at the whole rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

PROCESSES = ("constant", "poisson")
DEFAULT_MAX_INFLIGHT = 1000  # requests in flight beyond which an arrival is not sent: a bound on sockets and memory


@dataclass
class Schedule:
    rate: float  # requests/s of the whole stream, all generators together
    process: str = "poisson"
    seed: int = 0
    index: int = 0  # this generator among `generators`
    generators: int = 1
    _k: int = field(default=0, init=False)
    _next: float = field(default=0.0, init=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or not 0 <= self.index < self.generators:
            raise ValueError(f"a schedule needs a positive rate and 0 <= index < generators, got {self}")
        if self.process not in PROCESSES:
            raise ValueError(f"arrival process {self.process!r}: expected one of {', '.join(PROCESSES)}")
        self._rng = random.Random(f"{self.seed}:{self.index}")  # str seeds are hashed the same in every run
        self._next = self._offset()

    @property
    def own_rate(self) -> float:
        return self.rate / self.generators

    def _offset(self) -> float:
        if self.process == "constant":
            return (self.index + self._k * self.generators) / self.rate
        return self._next + self._rng.expovariate(self.own_rate)

    def peek(self) -> float:
        """The next arrival's offset, not yet taken."""
        return self._next

    def pop(self) -> float:
        """The next arrival's offset; the one after becomes next."""
        due = self._next
        self._k += 1
        self._next = self._offset()
        return due
