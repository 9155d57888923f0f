"""Raw files of dataclasses, one JSON object per line, appended as each is known: a kill costs at most the line
being written, which the reader skips."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def append(path: Path, item: Any) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(item)) + "\n")


def read(path: Path, cls: type[T]) -> list[T]:
    """Every readable line as `cls`; fields this version does not know are ignored."""
    return read_counted(path, cls)[0]


def read_counted(path: Path, cls: type[T]) -> tuple[list[T], int]:
    """Every readable line as `cls`, and how many lines were unreadable (a line cut short by a kill)."""
    if not path.exists():
        return [], 0
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    out = []
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(cls(**{k: v for k, v in json.loads(line).items() if k in known}))
        except (json.JSONDecodeError, TypeError, AttributeError):  # AttributeError: JSON, but not an object
            bad += 1
    return out, bad
