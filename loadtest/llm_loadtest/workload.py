"""The requests a run sends, planned before it: prompts (or conversations), each with its own output-token cap.

A plan is built once, before the load starts, from a dataset (datasets.py) or synthetic prompts (synthetic.py) with
lengths drawn from distributions (lengths.py), all from one seed: the same settings give the same requests in the
same order. Sending then costs a list lookup, never a tokenizer call. The sweep writes the plan to
`workload.jsonl`, and Locust sends it in order, request i being the plan's entry i (cycled when the step sends
more); with several Locust processes, process k of P sends entries k, k + P, k + 2P, ...
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llm_loadtest.datasets import Conversation, DatasetError, Turn, load_dataset
from llm_loadtest.lengths import LengthError, Lengths, parse_lengths
from llm_loadtest.prompts import PromptError, load_prompts
from llm_loadtest.synthetic import PromptMaker, SyntheticError, count_tokens

PLAN_FILE = "workload.jsonl"
NUM_PROMPTS = 1000  # vLLM's bench serve default


class WorkloadError(ValueError):
    pass


@dataclass(frozen=True)
class WorkloadSpec:
    """How to plan the requests; inactive (the `--prompts` set and the step's token cap) when nothing is set."""

    dataset: str | None = None
    tokenizer: str | None = None  # a local path or a Hub id, loaded with transformers' AutoTokenizer
    input_tokens: str | None = None  # lengths.py syntax
    output_tokens: str | None = None
    prefix_tokens: int = 0
    seed: int = 0
    num_prompts: int = NUM_PROMPTS
    prompts: str = "default"  # with --output-tokens alone: the prompts to cap

    @property
    def active(self) -> bool:
        return bool(self.dataset or self.input_tokens or self.output_tokens)

    def check(self) -> None:
        """Settings that cannot go together, said before anything is loaded."""
        for name, value in (("--input-tokens", self.input_tokens), ("--output-tokens", self.output_tokens)):
            if value is not None:
                try:
                    parse_lengths(value)
                except LengthError as exc:
                    raise WorkloadError(f"{name} {exc}") from None
        if self.dataset and self.input_tokens:
            raise WorkloadError("--dataset and --input-tokens: a dataset's prompts have their own lengths; give one")
        if self.input_tokens and not self.tokenizer:
            raise WorkloadError("--input-tokens needs --tokenizer (the target's, to measure prompts in its tokens)")
        if self.prefix_tokens and not self.input_tokens:
            raise WorkloadError("--prefix-tokens opens synthetic prompts: it needs --input-tokens")
        if self.prefix_tokens < 0 or self.num_prompts < 1:
            raise WorkloadError("--prefix-tokens must be at least 0 and --num-prompts at least 1")


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the plan. `messages`: a conversation for chat targets (else the prompt as one user turn)."""

    index: int
    prompt: str
    max_tokens: int | None = None  # the output-token cap asked for; None: the step's --max-new-tokens
    input_tokens: int | None = None  # the prompt's tokens (conversation: its turns' contents), without specials
    messages: list[dict[str, str]] | None = None

    def chat_messages(self) -> list[dict[str, str]]:
        return self.messages if self.messages is not None else [{"role": "user", "content": self.prompt}]


def load_tokenizer(name: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise WorkloadError("--tokenizer needs transformers (pip install 'llm-loadtest[tokenizer]')") from None
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:  # not found, offline, gated
        raise WorkloadError(f"--tokenizer {name}: cannot load it ({str(exc).splitlines()[0]})") from None


def build_plan(spec: WorkloadSpec, chat: bool = False) -> list[PlannedRequest]:
    """The plan of `spec`. `chat`: every target speaks openai-chat, so a dataset's conversations are sent whole
    (up to their last human turn); otherwise their first human turn, the same requests to every target."""
    spec.check()
    rng = random.Random(spec.seed)
    tokenizer = load_tokenizer(spec.tokenizer) if spec.tokenizer else None
    output = parse_lengths(spec.output_tokens) if spec.output_tokens else None
    try:
        if spec.dataset:
            return _from_dataset(spec, rng, tokenizer, output, chat)
        if spec.input_tokens:
            return _synthetic(spec, rng, tokenizer, parse_lengths(spec.input_tokens), output)
        prompts = load_prompts(spec.prompts)
    except (DatasetError, PromptError, SyntheticError) as exc:
        raise WorkloadError(str(exc)) from None
    texts = [prompts.items[i % len(prompts.items)] for i in range(spec.num_prompts)]
    rng.shuffle(texts)
    return _measured(
        [PlannedRequest(i, t, output.sample(rng) if output else None) for i, t in enumerate(texts)], tokenizer
    )


def _measured(plan: list[PlannedRequest], tokenizer: Any) -> list[PlannedRequest]:
    if tokenizer is None:
        return plan
    counts = count_tokens(tokenizer, [p.prompt for p in plan])
    return [replace(p, input_tokens=n) for p, n in zip(plan, counts, strict=True)]


def _synthetic(
    spec: WorkloadSpec, rng: random.Random, tokenizer: Any, lengths: Lengths, output: Lengths | None
) -> list[PlannedRequest]:
    maker = PromptMaker(tokenizer, rng, spec.prefix_tokens)
    drawn = [(lengths.sample(rng), output.sample(rng) if output else None) for _ in range(spec.num_prompts)]
    prompts = maker.make([n for n, _ in drawn])
    return [
        PlannedRequest(i, text, cap, got) for i, ((_, cap), (text, got)) in enumerate(zip(drawn, prompts, strict=True))
    ]


def _from_dataset(
    spec: WorkloadSpec, rng: random.Random, tokenizer: Any, output: Lengths | None, chat: bool
) -> list[PlannedRequest]:
    """Conversations in a seeded shuffle (vLLM's ShareGPT sampling), the first `num_prompts` usable ones. With a
    tokenizer and no --output-tokens, each request's cap is its reply's length, and conversations without a reply
    are left out."""
    dataset = load_dataset(spec.dataset or "")
    conversations: list[Conversation] = list(dataset.conversations)
    rng.shuffle(conversations)
    caps_from_replies = tokenizer is not None and output is None and not dataset.plain
    chosen: list[tuple[tuple[Turn, ...], str | None]] = []
    for c in conversations:
        if len(chosen) == spec.num_prompts:
            break
        if chat:
            turns, reply = c.up_to_last_prompt(), c.last_reply()
        else:
            turns, reply = (Turn("user", c.first_prompt()),), c.first_reply()
        if caps_from_replies and not (reply and reply.strip()):
            continue
        chosen.append((turns, reply))
    if not chosen:
        raise WorkloadError(f"--dataset {spec.dataset}: no conversation has a reply to take its output length from")
    replies = count_tokens(tokenizer, [r or "" for _, r in chosen]) if caps_from_replies else []
    plan = []
    for i, (turns, _) in enumerate(chosen):
        cap = replies[i] if caps_from_replies else (output.sample(rng) if output else None)
        messages = [{"role": t.role, "content": t.content} for t in turns] if chat else None
        first = next(t.content for t in turns if t.role == "user")
        plan.append(PlannedRequest(i, first, cap, None, messages))
    if tokenizer is None:
        return plan
    sizes = [count_tokens(tokenizer, [t.content for t in turns]) for turns, _ in chosen]
    return [replace(p, input_tokens=sum(n)) for p, n in zip(plan, sizes, strict=True)]


def write_plan(path: Path, plan: list[PlannedRequest]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in plan:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def read_plan(path: str | Path) -> list[PlannedRequest]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        plan = [PlannedRequest(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, ValueError, TypeError) as exc:
        raise WorkloadError(f"--workload {path}: not a plan written by llm-loadtest ({exc})") from None
    if not plan:
        raise WorkloadError(f"--workload {path}: no requests in it")
    return plan


@dataclass
class PlanCursor:
    """Hands out a plan's requests in order to the users of one Locust process; process `start` of `stride`."""

    plan: list[PlannedRequest]
    start: int = 0
    stride: int = 1
    taken: int = field(default=0)

    def next(self) -> PlannedRequest:
        i = (self.start + self.taken * self.stride) % len(self.plan)
        self.taken += 1
        return self.plan[i]
