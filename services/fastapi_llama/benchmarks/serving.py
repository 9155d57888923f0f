"""Serving benchmark: each batching mode over HTTP against the offline bound of one padded `model.generate`.

For each mode, starts `fastapi-llama --batching MODE` on 127.0.0.1, sends N concurrent streaming requests
(N = 1, 4, 16, 32, 64 by default; 128 new tokens), and prints one table: aggregate output tok/s (tokens counted from
the streams ÷ wall time of the step), p50 TTFT, p50 end-to-end latency, ratio to naive at the same N, and the share
of the offline bound (tok/s of one padded `generate` of N rows with no HTTP, measured in this run). Writes the table
to results/bench-serving.json. A benchmark, not a test: ratios come from one run on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from llm_loadtest.local import Stack, start_engines

PROMPT = "Write a short story about a robot who learns to paint."


@dataclass
class Row:
    mode: str
    users: int
    tok_s: float
    ttft_p50_s: float
    e2e_p50_s: float
    ratio_to_naive: float | None
    share_of_bound: float | None
    tokens: int
    errors: int


@dataclass
class Outcome:
    ttft: float
    e2e: float
    tokens: int
    ok: bool


async def one_stream(client: httpx.AsyncClient, url: str, max_new_tokens: int) -> Outcome:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": max_new_tokens, "details": False}}
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    ok = False
    buffer = b""
    async with client.stream("POST", f"{url}/generate_stream", json=body) as r:
        async for chunk in r.aiter_raw():  # bytes as they arrive, no line buffering
            buffer += chunk
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                if not raw.startswith(b"data:"):
                    continue
                event = json.loads(raw[5:])
                if "error" in event:
                    return Outcome(float("nan"), time.perf_counter() - t0, tokens, False)
                if ttft is None:
                    ttft = time.perf_counter() - t0
                tokens += 1
                ok = ok or event.get("generated_text") is not None
    return Outcome(ttft if ttft is not None else float("nan"), time.perf_counter() - t0, tokens, ok)


async def step(url: str, users: int, max_new_tokens: int) -> tuple[float, list[Outcome]]:
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one_stream(client, url, 4)  # open a connection, touch the server
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(one_stream(client, url, max_new_tokens) for _ in range(users)))
        return time.perf_counter() - t0, list(outcomes)


def offline_bound(model_path: str, users_list: list[int], max_new_tokens: int) -> dict[int, float]:
    """tok/s of one padded `generate` per batch size, in-process, fixed length (min_new_tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa").eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    bound = {}
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, do_sample=False)  # warm-up
        for n in users_list:
            batch = ids.repeat(n, 1)
            t0 = time.perf_counter()
            model.generate(
                batch,
                attention_mask=torch.ones_like(batch),
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            bound[n] = n * max_new_tokens / (time.perf_counter() - t0)
    return bound


def summarize(mode: str, users: int, wall: float, outcomes: list[Outcome]) -> Row:
    good = [o for o in outcomes if o.ok]
    tokens = sum(o.tokens for o in good)
    return Row(
        mode=mode,
        users=users,
        tok_s=tokens / wall,
        ttft_p50_s=statistics.median(o.ttft for o in good) if good else float("nan"),
        e2e_p50_s=statistics.median(o.e2e for o in good) if good else float("nan"),
        ratio_to_naive=None,
        share_of_bound=None,
        tokens=tokens,
        errors=len(outcomes) - len(good),
    )


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'mode':<11}{'users':>6}{'tok/s':>10}{'TTFT p50':>11}{'e2e p50':>10}{'x naive':>9}{'of bound':>10}{'err':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r.ratio_to_naive:.2f}" if r.ratio_to_naive is not None else "-"
        share = f"{r.share_of_bound:.0%}" if r.share_of_bound is not None else "-"
        print(
            f"{r.mode:<11}{r.users:>6}{r.tok_s:>10.0f}{r.ttft_p50_s:>10.3f}s{r.e2e_p50_s:>9.2f}s{ratio:>9}"
            f"{share:>10}{r.errors:>5}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-id", default=".cache/models/tiny-llama")
    parser.add_argument("--modes", default="naive,static,continuous")
    parser.add_argument("--users", default="1,4,16,32,64", help="concurrent streams per step")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="runs per step; the median tok/s run is kept")
    parser.add_argument("--out", type=Path, default=Path("results/bench-serving.json"))
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    users_list = [int(u) for u in args.users.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    print(f"offline bound: one padded generate per batch size ({args.max_new_tokens} new tokens)...", flush=True)
    bound = offline_bound(args.model_id, users_list, args.max_new_tokens)
    rows: list[Row] = []
    for mode in modes:
        stack = Stack(args.out.parent)  # the same start-up and shutdown as make bench
        try:
            url = start_engines(stack, [mode], args.model_id, max(users_list))[0].url
            for users in users_list:
                runs = []
                for _ in range(args.repeats):
                    wall, outcomes = asyncio.run(step(url, users, args.max_new_tokens))
                    runs.append(summarize(mode, users, wall, outcomes))
                row = sorted(runs, key=lambda r: r.tok_s)[len(runs) // 2]
                row.share_of_bound = row.tok_s / bound[users]
                rows.append(row)
                print(
                    f"  {mode:<11} users={users:<3} {row.tok_s:8.0f} tok/s  TTFT p50 {row.ttft_p50_s:.3f}s  "
                    f"errors {row.errors}",
                    flush=True,
                )
        finally:
            stack.stop()
    naive = {r.users: r.tok_s for r in rows if r.mode == "naive"}
    for r in rows:
        r.ratio_to_naive = r.tok_s / naive[r.users] if r.users in naive else None
    print()
    print_table(rows)
    print(
        "\noffline bound (one padded generate, no HTTP): " + ", ".join(f"{n}: {b:.0f} tok/s" for n, b in bound.items())
    )
    records = [
        {k: v for k, v in asdict(r).items() if k not in ("tokens", "errors")} | {"errors": r.errors} for r in rows
    ]
    args.out.write_text(json.dumps(records, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
