"""Prompt sets: a file (one prompt per line), the shipped default set, or one prompt repeated as in the article."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from importlib import resources

SAME_PROMPT = "Write a short story about a robot who learns to paint."


class PromptError(ValueError):
    pass


@dataclass
class Prompts:
    items: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def next(self) -> str:
        return self.items[0] if len(self.items) == 1 else self.rng.choice(self.items)


def load_prompts(spec: str) -> Prompts:
    """`default` (the shipped set), `same` (the article's setup: one prompt every time), or a file path."""
    if spec == "same":
        return Prompts([SAME_PROMPT])
    if spec == "default":
        text = resources.files("llm_loadtest").joinpath("data/prompts.txt").read_text(encoding="utf-8")
    else:
        try:
            with open(spec, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise PromptError(f"--prompts {spec}: cannot read the file ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise PromptError(f"--prompts {spec}: not UTF-8 text") from exc
    items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise PromptError(f"--prompts {spec}: no prompts in it (one prompt per line)")
    return Prompts(items)
