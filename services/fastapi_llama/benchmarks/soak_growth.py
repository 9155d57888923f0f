"""The soak's leak rule: a leak is resident memory that keeps climbing from one repetition's end to the next;
memory that climbs in the first repetition and then stays is an allocator keeping freed pages for reuse.

The first repetition is the reference, not evidence: it fills the allocator's heaps, the tokenizer's and torch's
caches, and the largest batch shapes. From its end on, a leak grows with every repetition, so the rule asks that
every later repetition end more than `bound_mib` above the one before. One repetition that ends higher (a larger
batch than before, heaps more fragmented) is not a leak; a leak of one request's tensors per request adds
megabytes per repetition at the soak's load, every time. Kept free of the soak's I/O so that the tests can
check the rule on figures of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class Growth:
    ends_mib: list[float]  # each repetition's memory at its end (soak.py: trimmed, anonymous, where it can be)
    deltas_mib: list[float]  # each repetition's end minus the previous one's, from the second repetition on
    bound_mib: float
    leak_suspected: bool | None  # None: fewer than two repetitions, nothing to compare


def judge(ends_mib: Sequence[float], bound_mib: float) -> Growth:
    """A leak is suspected when every repetition after the first ended more than `bound_mib` above the previous."""
    ends = [float(e) for e in ends_mib]
    deltas = [b - a for a, b in pairwise(ends)]
    suspected = all(d > bound_mib for d in deltas) if deltas else None
    return Growth(ends, deltas, bound_mib, suspected)
