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
    if not path.exists():
        return []
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(cls(**{k: v for k, v in json.loads(line).items() if k in known}))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a kill
    return out
