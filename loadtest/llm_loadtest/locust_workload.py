"""The request plan in Locust: its arguments (command line, `LOCUST_*` variables, the web UI's start form) and
each process's share of it, planned when a test starts, before its first request (workload.py)."""

from __future__ import annotations

import argparse
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

from llm_loadtest.workload import NUM_PROMPTS, PlanCursor, WorkloadSpec, build_plan, read_plan


def add_workload_arguments(parser: Any) -> None:
    """The request plan, built when a test starts (before its first request) on every process that runs users."""
    parser.add_argument(
        "--dataset",
        default="",
        env_var="LOCUST_DATASET",
        help="ShareGPT-format JSON/JSONL or a prompt file (one per line), sampled with --seed",
    )
    parser.add_argument(
        "--tokenizer",
        default="",
        env_var="LOCUST_TOKENIZER",
        help="The target's tokenizer (local path or Hub id) to measure and make prompts; with --dataset, each "
        "request's cap is its reply's length",
    )
    parser.add_argument(
        "--input-tokens",
        default="",
        env_var="LOCUST_INPUT_TOKENS",
        help="Synthetic prompts of N, uniform:LO:HI or normal:MEAN:SD tokens (needs --tokenizer)",
    )
    parser.add_argument(
        "--output-tokens",
        default="",
        env_var="LOCUST_OUTPUT_TOKENS",
        help="Each request's cap: N, uniform:LO:HI or normal:MEAN:SD tokens (instead of --max-new-tokens)",
    )
    parser.add_argument(
        "--prefix-tokens",
        type=int,
        default=0,
        env_var="LOCUST_PREFIX_TOKENS",
        help="A prefix of this many tokens shared by every synthetic prompt, before its --input-tokens",
    )
    parser.add_argument(
        "--seed", type=int, default=0, env_var="LOCUST_SEED", help="Seed of the request plan and of Poisson arrivals"
    )
    parser.add_argument(
        "--num-prompts",
        type=int,
        default=NUM_PROMPTS,
        env_var="LOCUST_NUM_PROMPTS",
        help="Requests planned (sent in order, cycled)",
    )
    parser.add_argument(
        "--workload",
        default="",
        env_var="LOCUST_WORKLOAD",
        include_in_web_ui=False,
        help="A request plan written by llm-loadtest (workload.jsonl), sent in order; no tokenizer needed",
    )
    parser.add_argument(
        "--no-ignore-eos",
        action="store_true",
        default=False,
        env_var="LOCUST_NO_IGNORE_EOS",
        help="Do not send ignore_eos (sent by default in the openai dialects, so answers run to their cap)",
    )


def workload_spec(opts: argparse.Namespace) -> WorkloadSpec:
    return WorkloadSpec(
        dataset=opts.dataset or None,
        tokenizer=opts.tokenizer or None,
        input_tokens=opts.input_tokens or None,
        output_tokens=opts.output_tokens or None,
        prefix_tokens=opts.prefix_tokens,
        seed=opts.seed,
        num_prompts=opts.num_prompts,
        prompts=opts.prompts,
    )


def load_workload(environment: Environment) -> PlanCursor | None:
    """This process's share of the plan, or None without one (the `--prompts` set and --max-new-tokens)."""
    opts = environment.parsed_options
    spec = workload_spec(opts)
    if not opts.workload and not spec.active:
        return None
    plan = read_plan(opts.workload) if opts.workload else build_plan(spec, chat=opts.api == "openai-chat")
    runner = environment.runner
    if isinstance(runner, WorkerRunner):  # --processes P forwards expect_workers = P to its workers
        return PlanCursor(plan, max(runner.worker_index, 0), max(getattr(opts, "expect_workers", 1) or 1, 1))
    return PlanCursor(plan)
