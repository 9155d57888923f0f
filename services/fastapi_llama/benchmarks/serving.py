"""Serving benchmark: each batching mode over HTTP against the offline bound of one padded `model.generate`.

For each mode, starts `fastapi-llama --batching MODE` on 127.0.0.1 (local mode's start-up), runs the load tester's
sweep against it — N concurrent streaming requests, N = 1, 4, 16, 32, 64 by default, 128 new tokens, one wave per
step (`--repeats` waves) — and prints one table from the sweep's summaries: aggregate output tok/s (tokens counted
from the streams ÷ wall time of the step), p50 TTFT, p50 end-to-end latency, ratio to naive at the same N, and the
share of the offline bound (tok/s of one padded `generate` of N rows with no HTTP, measured in this run). The
records and summaries are in results/bench-serving/; the table in results/bench-serving.json. A benchmark, not a
test: ratios come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llm_loadtest.local import start_engines
from llm_loadtest.metrics import StepSummary
from llm_loadtest.processes import ProcessGroup
from llm_loadtest.prompts import SAME_PROMPT
from llm_loadtest.sweep import SweepConfig, run_sweep

PROMPT = SAME_PROMPT


@dataclass
class Row:
    mode: str
    users: int
    tok_s: float
    ttft_p50_s: float | None
    e2e_p50_s: float | None
    ratio_to_naive: float | None
    share_of_bound: float | None
    errors: int

    @classmethod
    def of(cls, mode: str, s: StepSummary) -> Row:
        return cls(mode, s.users, s.output_tok_s, s.ttft_p50_s, s.e2e_p50_s, None, None, s.requests - s.ok)


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


def _s(v: float | None, width: int, digits: int) -> str:
    return f"{v:>{width - 1}.{digits}f}s" if v is not None else f"{'-':>{width}}"


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
            f"{r.mode:<11}{r.users:>6}{r.tok_s:>10.0f}{_s(r.ttft_p50_s, 11, 3)}{_s(r.e2e_p50_s, 10, 2)}{ratio:>9}"
            f"{share:>10}{r.errors:>5}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-id", default=".cache/models/tiny-llama")
    parser.add_argument("--modes", default="naive,static,continuous")
    parser.add_argument("--users", default="1,4,16,32,64", help="concurrent streams per step")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="waves per step: each user sends this many requests")
    parser.add_argument("--out", type=Path, default=Path("results/bench-serving.json"))
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    users_list = [int(u) for u in args.users.split(",")]
    work = args.out.with_suffix("")  # results/bench-serving/: records, summaries, server logs
    work.mkdir(parents=True, exist_ok=True)

    print(f"offline bound: one padded generate per batch size ({args.max_new_tokens} new tokens)...", flush=True)
    bound = offline_bound(args.model_id, users_list, args.max_new_tokens)
    rows: list[Row] = []
    for mode in modes:
        with ProcessGroup(work) as group:  # the same start-up and shutdown as make bench; one mode at a time
            target = start_engines(group, [mode], args.model_id, max(users_list))[0]
            cfg = SweepConfig(
                targets=[target],
                users=users_list,
                max_new_tokens=[args.max_new_tokens],
                duration_s=None,
                requests_per_user=args.repeats,
                warmup_requests=1,
                request_timeout_s=600,
                prompts="same",
                out=work / mode,
            )
            for s in run_sweep(cfg, progress=lambda line: print(f"  {line}", flush=True)):
                row = Row.of(mode, s)
                row.share_of_bound = row.tok_s / bound[s.users]
                rows.append(row)
    naive = {r.users: r.tok_s for r in rows if r.mode == "naive"}
    for r in rows:
        r.ratio_to_naive = r.tok_s / naive[r.users] if r.users in naive else None
    print()
    print_table(rows)
    print(
        "\noffline bound (one padded generate, no HTTP): " + ", ".join(f"{n}: {b:.0f} tok/s" for n, b in bound.items())
    )
    args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(f"written: {args.out} (records and summaries per mode in {work}/)")


if __name__ == "__main__":
    main()
