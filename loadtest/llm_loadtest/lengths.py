"""Token lengths drawn per request: `--input-tokens` and `--output-tokens`.

N                 every request N tokens (vLLM's `--random-input-len N` with `--random-range-ratio 0`)
uniform:LO:HI     uniform over LO..HI, both included (vLLM's range ratio, as bounds)
normal:MEAN:SD    normal, rounded, at least 1 (GuideLLM's `prompt_tokens` with `prompt_tokens_stdev`)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

KINDS = ("fixed", "uniform", "normal")
SYNTAX = "N, uniform:LO:HI or normal:MEAN:SD"


class LengthError(ValueError):
    pass


@dataclass(frozen=True)
class Lengths:
    kind: str  # fixed, uniform or normal
    a: float  # fixed: N; uniform: LO; normal: MEAN
    b: float = 0.0  # uniform: HI; normal: SD

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        if self.kind == "uniform":
            return f"uniform:{int(self.a)}:{int(self.b)}"
        return f"normal:{self.a:g}:{self.b:g}"


def parse_lengths(text: str) -> Lengths:
    """`N`, `uniform:LO:HI` or `normal:MEAN:SD`, in tokens; LengthError says what is wrong."""
    spec = text.strip().lower()
    if re.fullmatch(r"\d+", spec):
        if int(spec) < 1:
            raise LengthError(f"{text!r}: a length is at least 1 token")
        return Lengths("fixed", int(spec))
    m = re.fullmatch(r"uniform:(\d+):(\d+)", spec)
    if m:
        low, high = int(m.group(1)), int(m.group(2))
        if not 1 <= low <= high:
            raise LengthError(f"{text!r}: uniform:LO:HI needs 1 <= LO <= HI")
        return Lengths("uniform", low, high)
    m = re.fullmatch(r"normal:(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)", spec)
    if m:
        mean, sd = float(m.group(1)), float(m.group(2))
        if mean < 1:
            raise LengthError(f"{text!r}: normal:MEAN:SD needs MEAN >= 1")
        return Lengths("normal", mean, sd)
    raise LengthError(f"{text!r}: expected {SYNTAX}, e.g. 128, uniform:64:256, normal:512:128")
