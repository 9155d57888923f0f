"""Conversations from a file: ShareGPT-format JSON or JSONL, or plain prompts, one per line.

ShareGPT: a list (JSON) or lines (JSONL) of `{"conversations": [{"from": "human", "value": "..."},
{"from": "gpt", "value": "..."}, ...]}`; turns may also be written `{"role": "user", "content": "..."}`, and the
list may be under `messages` instead (OpenAI's chat format). A file whose first character is not `[` or `{` is
plain prompts, one per line (the `--prompts` format). Entries without a human turn are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# ShareGPT's speakers (`from`), and OpenAI's roles, as chat roles.
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Turn:
    role: str  # user, assistant or system
    content: str


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]

    def first_prompt(self) -> str:
        return next(t.content for t in self.turns if t.role == "user")

    def first_reply(self) -> str | None:
        """The reply to the first human turn: the output length a completion of `first_prompt` is asked for."""
        first = next(i for i, t in enumerate(self.turns) if t.role == "user")
        return _reply_after(self.turns, first)

    def up_to_last_prompt(self) -> tuple[Turn, ...]:
        """The conversation as a chat request sends it: every turn up to and including the last human one."""
        last = max(i for i, t in enumerate(self.turns) if t.role == "user")
        return self.turns[: last + 1]

    def last_reply(self) -> str | None:
        last = max(i for i, t in enumerate(self.turns) if t.role == "user")
        return _reply_after(self.turns, last)


def _reply_after(turns: tuple[Turn, ...], i: int) -> str | None:
    nxt = turns[i + 1] if i + 1 < len(turns) else None
    return nxt.content if nxt is not None and nxt.role == "assistant" else None


@dataclass(frozen=True)
class Dataset:
    conversations: list[Conversation]
    skipped: int = 0  # entries without a human turn, or not in the format
    plain: bool = False  # plain prompts: no replies, so no output lengths


def _conversation(entry: object) -> Conversation | None:
    if not isinstance(entry, dict):
        return None
    raw = entry.get("conversations", entry.get("messages"))
    if not isinstance(raw, list):
        return None
    turns = []
    for turn in raw:
        if not isinstance(turn, dict):
            return None
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        role = ROLES.get(str(speaker).lower())
        if role is None or not isinstance(text, str):
            return None
        turns.append(Turn(role, text))
    if not any(t.role == "user" and t.content.strip() for t in turns):
        return None
    return Conversation(tuple(turns))


def load_dataset(path: str | Path) -> Dataset:
    """The file's conversations, in file order; DatasetError when it cannot be read or holds none."""
    name = f"--dataset {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{name}: cannot read the file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{name}: not UTF-8 text") from exc
    head = text.lstrip()[:1]
    if head not in ("[", "{"):
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise DatasetError(f"{name}: no prompts in it (one prompt per line, or ShareGPT JSON/JSONL)")
        return Dataset([Conversation((Turn("user", p),)) for p in prompts], plain=True)
    try:
        if head == "[":
            entries = json.loads(text)
        else:  # JSONL, or one JSON object holding a single conversation
            lines = [ln for ln in text.splitlines() if ln.strip()]
            entries = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name}: not JSON or JSONL ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(entries, list):
        raise DatasetError(f"{name}: expected a list of conversations")
    found = [_conversation(e) for e in entries]
    conversations = [c for c in found if c is not None]
    if not conversations:
        raise DatasetError(
            f'{name}: no conversation with a human turn (ShareGPT: {{"conversations": [{{"from": "human", '
            f'"value": ...}}, ...]}}, or role/content turns)'
        )
    return Dataset(conversations, skipped=len(found) - len(conversations))
