"""`llm-loadtest`: `sweep` runs the headless sweep, `report` renders a sweep's directory."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from llm_loadtest.client import Target
from llm_loadtest.metrics import SLO
from llm_loadtest.prompts import PromptError, load_prompts


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,5,10") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers, e.g. 1,5,10")
    return values


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 20s, 2m or 500ms")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


class _Parser(argparse.ArgumentParser):
    """One line per mistake, not the whole usage: the message says what to fix, --help says the rest."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-loadtest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="targets x max-new-tokens x concurrency, headless, with Locust")
    sweep.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="NAME=URL[@api]",
        help="a server to load; repeat for several (api: tgi or openai; default --api)",
    )
    sweep.add_argument("--api", choices=["tgi", "openai"], default="tgi", help="default dialect of the targets")
    sweep.add_argument(
        "--users",
        type=_int_list,
        default=[1, 5, 10, 25, 50, 100, 200, 300],
        help="concurrency steps (default: the article's 1,5,10,25,50,100,200,300)",
    )
    sweep.add_argument("--max-new-tokens", type=_int_list, default=[128], help="token caps, e.g. 128,256")
    sweep.add_argument("--duration", type=_duration, default=None, help="per step, e.g. 20s (default 30s)")
    sweep.add_argument("--requests", type=int, default=None, help="per step: stop after this many requests")
    sweep.add_argument(
        "--requests-per-user",
        type=int,
        default=None,
        help="per step: each user sends this many requests, then the step ends (1: one wave)",
    )
    sweep.add_argument("--warmup", type=int, default=2, help="unrecorded requests per target and cap first")
    sweep.add_argument("--request-timeout", type=_duration, default=300.0, help="per request (default 300s)")
    sweep.add_argument(
        "--reconnect-wait",
        type=_duration,
        default=60.0,
        help="after a step with connection errors, wait this long for the target to answer again (default 60s)",
    )
    sweep.add_argument(
        "--retry-pause",
        type=_duration,
        default=0.5,
        help="a user's first pause after a refused request, doubling up to 8s (default 500ms)",
    )
    sweep.add_argument("--prompts", default="default", help="default, same (the article's setup) or a file")
    sweep.add_argument("--processes", type=int, default=1, help="Locust processes generating the load")
    sweep.add_argument("--model", default=None, help="model name for openai targets")
    sweep.add_argument("--slo-ttft", type=_duration, default=2.0, help="goodput SLO on TTFT (default 2s)")
    sweep.add_argument("--slo-itl", type=_duration, default=0.1, help="goodput SLO on ITL (default 100ms)")
    sweep.add_argument("--out", type=Path, required=True, help="directory for requests.jsonl and summaries")
    sweep.add_argument("--no-report", action="store_true", help="do not render report.md at the end")
    report = sub.add_parser("report", help="render report.md and charts from a sweep's directory")
    report.add_argument("directory", type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        from llm_loadtest.report import write_report

        try:
            path = write_report(args.directory)
        except (OSError, ValueError) as exc:
            sys.exit(f"llm-loadtest report: {exc}")
        print(f"report: {path}")
        return

    try:
        targets = [Target.parse(t, args.api) for t in args.target]
        load_prompts(args.prompts)
    except (ValueError, PromptError) as exc:
        sys.exit(f"llm-loadtest sweep: {exc}")
    if len({t.name for t in targets}) != len(targets):
        sys.exit("llm-loadtest sweep: target names must differ")
    if args.processes < 1 or (args.requests is not None and args.requests < 1):
        sys.exit("llm-loadtest sweep: --processes and --requests must be at least 1")
    from llm_loadtest.sweep import SweepConfig, SweepError, run_sweep

    by_count = args.requests or args.requests_per_user
    duration = args.duration if args.duration is not None else (None if by_count else 30.0)
    cfg = SweepConfig(
        targets=targets,
        users=args.users,
        max_new_tokens=args.max_new_tokens,
        duration_s=duration,
        requests_per_step=args.requests,
        requests_per_user=args.requests_per_user,
        warmup_requests=args.warmup,
        request_timeout_s=args.request_timeout,
        reconnect_wait_s=args.reconnect_wait,
        retry_pause_s=args.retry_pause,
        prompts=args.prompts,
        processes=args.processes,
        model=args.model,
        slo=SLO(ttft_s=args.slo_ttft, itl_s=args.slo_itl),
        out=args.out,
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        run_sweep(cfg)
    except SweepError as exc:
        if (args.out / "requests.jsonl").exists() and not args.no_report:
            _report(args.out)  # what finished before the stop
        sys.exit(f"llm-loadtest sweep: {exc}")
    if not args.no_report:
        _report(args.out)
    print(f"results: {args.out}")


def _report(out: Path) -> None:
    from llm_loadtest.report import write_report

    print(f"report: {write_report(out)}")


if __name__ == "__main__":
    main()
