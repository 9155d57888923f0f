"""Locust integration: command-line (and web-UI) arguments, the LLM user, and where its records go.

Records flow one way. A user produces a RequestRecord; on a worker it is sent to the master as a message, on the
master (or a standalone run) it is written to `--records-file`, observed by the Prometheus metrics and the live
tab. Nothing is counted twice: workers keep no totals of their own.

Closed loop (the default): each user sends one request after another. Open loop (`--arrival-rate R`): requests go
out at due times whatever the responses (open_loop.py); the first user of each Locust process runs its generator
at R / processes, and any further users of that process stop at once, since the rate, not the users, sets the load.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gevent
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from llm_loadtest.arrivals import DEFAULT_MAX_INFLIGHT, PROCESSES, Schedule
from llm_loadtest.client import RequestSpec, Target, stream_request
from llm_loadtest.dialects import DIALECTS
from llm_loadtest.http import Connection
from llm_loadtest.locust_workload import add_workload_arguments, load_workload
from llm_loadtest.open_loop import OpenLoop, split
from llm_loadtest.records import WORKER_LOST_EXIT, RecordWriter, RequestRecord
from llm_loadtest.workload import PlanCursor, PlannedRequest, WorkloadError

log = logging.getLogger(__name__)
RECORD_MESSAGE = "llm_record"
WORKER_WATCH_S = 1.0
DONE_MESSAGE = "llm_arrivals_done"  # a worker's generator: its arrivals are over and answered
STATE_KEY = "llm_loadtest"
GENERATOR_KEY = "llm_open_loop_user"  # the user running this process's open-loop generator
ARRIVAL_PROCESSES = "llm_arrival_processes"  # an option the master sets: the processes sharing the rate
ARRIVAL_START = "llm_arrival_start"  # and the epoch second their schedules start from
START_MARGIN_S = 0.5  # from the master's start to its workers' first arrivals: the spawn messages' way there
WORKLOAD_KEY = "llm_workload"
MAX_RETRY_PAUSE_S = 8.0


def add_arguments(parser: Any) -> None:
    # On the parser itself, not a group: only Locust's parser knows include_in_web_ui.
    parser.add_argument(
        "--api",
        choices=sorted(DIALECTS),
        default="tgi",
        env_var="LOCUST_API",
        help="Dialect of the target: tgi (/generate_stream), openai (/v1/completions) or openai-chat "
        "(/v1/chat/completions)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        env_var="LOCUST_MAX_NEW_TOKENS",
        help="Token cap per request (the article uses 128 and 256)",
    )
    parser.add_argument(
        "--prompts",
        default="default",
        env_var="LOCUST_PROMPTS",
        help="'default' (shipped set), 'same' (one prompt every time, as the article) or a file",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        env_var="LOCUST_REQUEST_TIMEOUT",
        help="Seconds before a request counts as a timeout",
    )
    parser.add_argument(
        "--retry-pause",
        type=float,
        default=0.5,
        env_var="LOCUST_RETRY_PAUSE",
        help="Seconds a user waits after a refused request (connection refused, 429/503, an error event before "
        "the first token), doubling with each refusal in a row up to 8 s",
    )
    parser.add_argument("--model", default="", env_var="LOCUST_MODEL", help="Model name sent by the openai dialects")
    add_workload_arguments(parser)
    parser.add_argument(
        "--target-name",
        default="",
        env_var="LOCUST_TARGET_NAME",
        help="Name of the target in records and metrics (default: the host)",
    )
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=0.0,
        env_var="LOCUST_ARRIVAL_RATE",
        help="Open loop: requests/s, sent at their due times whatever the responses, all processes together "
        "(0: closed loop, each user sends one request after another)",
    )
    parser.add_argument(
        "--arrival",
        choices=PROCESSES,
        default="poisson",
        env_var="LOCUST_ARRIVAL",
        help="Open loop: the arrival process, constant (every 1/rate) or poisson (exponential gaps)",
    )
    parser.add_argument(
        "--arrival-duration",
        type=float,
        default=0.0,
        env_var="LOCUST_ARRIVAL_DURATION",
        help="Open loop: seconds of arrivals from the start; once they are over and answered the run ends (headless) "
        "or stops (web UI) (0: arrivals until the run is stopped)",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=DEFAULT_MAX_INFLIGHT,
        env_var="LOCUST_MAX_INFLIGHT",
        help="Open loop: an arrival due while this many requests are in flight (all processes together) is not "
        "sent, and recorded as not_sent",
    )
    parser.add_argument(
        "--records-file",
        default="",
        env_var="LOCUST_RECORDS_FILE",
        include_in_web_ui=False,
        help="Append one JSON line per finished request here (master or standalone)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        env_var="LOCUST_METRICS_PORT",
        include_in_web_ui=False,
        help="Also serve /metrics on this port (useful headless; the web UI serves /metrics too)",
    )
    parser.add_argument(
        "--requests-per-user",
        type=int,
        default=0,
        env_var="LOCUST_REQUESTS_PER_USER",
        include_in_web_ui=False,
        help="Each user stops after this many requests (0: no limit); with --max-requests, one wave per step",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=0,
        env_var="LOCUST_MAX_REQUESTS",
        include_in_web_ui=False,
        help="Stop after this many finished requests (0: no limit)",
    )


def _options(environment: Environment) -> argparse.Namespace:
    return environment.parsed_options


class LLMUser(User):
    """Sends one streamed request after another (a closed loop: N users = N concurrent requests, as the article),
    or, with --arrival-rate, runs its process's open-loop generator."""

    abstract = True
    refusals_in_a_row = 0
    open_loop: OpenLoop | None = None

    def wait_time(self) -> float:
        if self.open_loop is not None:
            return self.open_loop.wait_s()
        # A refused request comes back in microseconds; retried in a tight loop it would write thousands of
        # identical errors a second and starve the server of the CPU it generates with. Users back off as
        # OpenAI's and most SDK clients do: the pause doubles with each refusal in a row, up to 8 s, with jitter
        # so that refused users do not return in waves. Any other outcome is followed by the next request at once.
        if not self.refusals_in_a_row:
            return 0.0
        pause = min(_options(self.environment).retry_pause * 2 ** (self.refusals_in_a_row - 1), MAX_RETRY_PAUSE_S)
        return pause * random.uniform(0.75, 1.0)

    def on_start(self) -> None:
        from llm_loadtest.prompts import load_prompts

        opts = _options(self.environment)
        self.connection = Connection((self.host or "").rstrip("/"))
        self.prompts = load_prompts(opts.prompts)
        self.sent = 0
        if opts.arrival_rate > 0 and getattr(self.environment, GENERATOR_KEY, None) is None:
            setattr(self.environment, GENERATOR_KEY, self)
            self.open_loop = self._open_loop(opts)

    def _open_loop(self, opts: argparse.Namespace) -> OpenLoop:
        index, processes, start = 0, 1, None
        if isinstance(self.environment.runner, WorkerRunner):
            index = max(0, self.environment.runner.worker_index)
            processes = max(getattr(opts, ARRIVAL_PROCESSES, 1), index + 1)
            start = getattr(opts, ARRIVAL_START, None)
        host = (self.host or "").rstrip("/")
        target = Target(opts.target_name or host, host, opts.api)
        schedule = Schedule(opts.arrival_rate, opts.arrival, opts.seed, index, processes)

        def spec(due: float) -> RequestSpec:
            planned = self._next_planned()
            return self._spec(opts, planned, due=due)

        bound = split(opts.max_inflight, processes)
        done = functools.partial(arrivals_done, self.environment)
        duration = opts.arrival_duration or None
        return OpenLoop(schedule, target, spec, self._finish, bound, duration, done, start)

    def on_stop(self) -> None:
        if self.open_loop is not None:
            self.open_loop.stop(drain_s=self.environment.stop_timeout or 0.0)
            self.open_loop = None
            setattr(self.environment, GENERATOR_KEY, None)
        self.connection.close()

    @task
    def generate(self) -> None:
        opts = _options(self.environment)
        if opts.arrival_rate > 0:
            if self.open_loop is None:
                raise StopUser()  # this process's generator runs in another user
            self.open_loop.fire()
            return
        if opts.requests_per_user and self.sent >= opts.requests_per_user:
            raise StopUser()
        self.sent += 1
        host = (self.host or "").rstrip("/")
        target = Target(opts.target_name or host, host, opts.api)
        workload: PlanCursor | None = getattr(self.environment, WORKLOAD_KEY, None)
        if workload is not None and not workload.plan:
            raise StopUser()
        spec = self._spec(opts, self._next_planned())
        record = stream_request(self.connection, target, spec, on_cancel=self._finish)
        self._finish(record)
        self.refusals_in_a_row = self.refusals_in_a_row + 1 if record.refused else 0

    def _next_planned(self) -> PlannedRequest | None:
        workload: PlanCursor | None = getattr(self.environment, WORKLOAD_KEY, None)
        return workload.next() if workload is not None and workload.plan else None

    def _spec(self, opts: argparse.Namespace, planned: PlannedRequest | None, due: float | None = None) -> RequestSpec:
        """The next request, closed or open loop: the planned one (--workload, a dataset), else the next prompt."""
        return RequestSpec(
            planned.prompt if planned else self.prompts.next(),
            opts.max_new_tokens,
            opts.request_timeout,
            users=0 if due is not None else opts.num_users or 0,  # open loop: the rate, not users, sets the load
            model=opts.model or None,
            ignore_eos=not opts.no_ignore_eos,
            planned=planned,
            due=due,
            rate=opts.arrival_rate if due is not None else None,
        )

    def _finish(self, record: RequestRecord) -> None:
        report_to_locust(self.environment, record)
        route_record(self.environment, record)


def report_to_locust(environment: Environment, r: RequestRecord) -> None:
    """The request itself is one Locust request (its size column: output tokens, as locust.contrib.oai does).
    TTFT, ITL and output tokens get rows of their own, logged on their entries only, so the request count and
    the Aggregated row stay those of real requests."""
    stats = environment.stats
    if not r.sent:  # no request: counted on a row of its own, not as a failed request
        stats.get(f"{r.target} not sent (count, not ms)", "LLM").log(0, 0)
        return
    if r.send_lag_s is not None:
        stats.get(f"{r.target} send lag", "LLM").log(r.send_lag_s * 1000, 0)
    exception = None if r.ok else RuntimeError(f"{r.status}: {r.error}")
    environment.events.request.fire(
        request_type="LLM",
        name=f"{r.target} e2e",
        response_time=r.e2e_s * 1000,
        response_length=r.output_tokens,
        exception=exception,
        context={"status": r.status, "request_id": r.request_id},
    )
    if not r.ok:
        return
    if r.ttft_s is not None:
        stats.get(f"{r.target} TTFT", "LLM").log(r.ttft_s * 1000, 0)
    if r.itl_s is not None:
        stats.get(f"{r.target} ITL", "LLM").log(r.itl_s * 1000, 0)
    stats.get(f"{r.target} output tokens (count, not ms)", "LLM").log(r.output_tokens, r.output_tokens)


def arrivals_done(environment: Environment) -> None:
    """A generator's arrivals are over and answered: tell whoever ends the run (the master, or this process)."""
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(DONE_MESSAGE)
        return
    state = getattr(environment, STATE_KEY, None)
    if state is not None:
        state.arrivals_done()


def route_record(environment: Environment, record: RequestRecord) -> None:
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(RECORD_MESSAGE, asdict(record))
        return
    state = getattr(environment, STATE_KEY, None)
    if state is not None:
        state.accept(record)


class MasterState:
    """Everything that sees each record exactly once: the file, the metrics, the live tab, the request limit."""

    def __init__(self, environment: Environment) -> None:
        from prometheus_client import CollectorRegistry

        from llm_loadtest.exporter import ClientMetrics
        from llm_loadtest.live import LiveWindow

        opts = _options(environment)
        self.environment = environment
        self.writer = RecordWriter(Path(opts.records_file)) if opts.records_file else None
        self.registry = CollectorRegistry()
        self.metrics = ClientMetrics(
            self.registry, users=lambda: float(environment.runner.user_count if environment.runner else 0)
        )
        self.live = LiveWindow()
        self.finished = 0
        self.max_requests = opts.max_requests
        self.lost_workers: set[str] = set()

    def worker_lost(self, worker_id: str) -> None:
        """Once per worker that went missing: counted, logged, and the exit code says so (the sweep flags the
        step: the worker's in-flight requests have no record)."""
        if worker_id in self.lost_workers:
            return
        self.lost_workers.add(worker_id)
        self.metrics.workers_lost.inc()
        self.environment.process_exit_code = WORKER_LOST_EXIT
        log.warning("Locust worker %s lost (no heartbeat): its requests in flight have no record", worker_id)
        self.generators_done = 0

    def accept(self, record: RequestRecord) -> None:
        if self.writer is not None:
            self.writer.write(record)
        self.metrics.observe(record)
        self.live.add(record)
        self.finished += record.sent
        if self.max_requests and self.finished == self.max_requests and self.environment.runner is not None:
            log.info("--max-requests %d reached; stopping", self.max_requests)
            # Not from this greenlet: it may be a user's, which quit() would wait for (and kill).
            gevent.spawn(self.environment.runner.quit)

    def arrivals_done(self) -> None:
        """Once every process's generator is done (--arrival-duration), the run ends: headless, Locust quits;
        with the web UI, the test stops and the UI stays."""
        self.generators_done += 1
        runner = self.environment.runner
        if runner is None or self.generators_done < getattr(_options(self.environment), ARRIVAL_PROCESSES, 1):
            return
        log.info("--arrival-duration: the arrivals are over and answered; stopping")
        gevent.spawn(runner.quit if self.environment.web_ui is None else runner.stop)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def watch_workers(runner: MasterRunner, state: MasterState) -> None:
    """Locust marks a worker missing when its heartbeats stop (after about 3 s) but fires no event for it."""
    while True:
        gevent.sleep(WORKER_WATCH_S)
        for worker in runner.clients.missing:
            state.worker_lost(worker.id)


def _share_rate(environment: Environment, state: MasterState) -> None:
    """As a test starts: the processes that will share the arrival rate (the workers connected, or this one), and
    when their schedules start. Custom options travel to the workers in each spawn message, so each runs its
    generator at rate / processes, from one moment (a constant rate's generators then interleave exactly)."""
    runner = environment.runner
    workers = 1
    if isinstance(runner, MasterRunner):
        workers = len(runner.clients.ready + runner.clients.running + runner.clients.spawning)
        setattr(_options(environment), ARRIVAL_START, time.time() + START_MARGIN_S)
    setattr(_options(environment), ARRIVAL_PROCESSES, max(1, workers))
    state.generators_done = 0


def install(event_hooks: Any = events) -> None:
    """Register the plugin on Locust's event hooks (call once, from the locustfile)."""
    event_hooks.init_command_line_parser.add_listener(add_arguments)

    @event_hooks.test_start.add_listener
    def _plan(environment: Environment, **_: Any) -> None:
        if isinstance(environment.runner, MasterRunner):
            return  # the workers plan for themselves, from the options the master sent them
        try:
            setattr(environment, WORKLOAD_KEY, load_workload(environment))
        except WorkloadError as exc:
            log.error("%s", exc)
            setattr(environment, WORKLOAD_KEY, PlanCursor([]))  # users stop rather than send something else
            if environment.runner is not None:
                gevent.spawn(environment.runner.quit)

    @event_hooks.init.add_listener
    def _on_init(environment: Environment, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        state = MasterState(environment)
        setattr(environment, STATE_KEY, state)
        environment.events.reset_stats.add_listener(lambda **__: state.live.reset())
        if isinstance(environment.runner, MasterRunner):
            environment.runner.register_message(
                RECORD_MESSAGE, lambda msg, **__: state.accept(RequestRecord.from_dict(msg.data))
            )
            gevent.spawn(watch_workers, environment.runner, state)
            environment.runner.register_message(DONE_MESSAGE, lambda *_, **__: state.arrivals_done())
        environment.events.test_start.add_listener(lambda **__: _share_rate(environment, state))
        if environment.web_ui is not None:
            from llm_loadtest.webui import extend_web_ui

            extend_web_ui(environment, state)
        if _options(environment).metrics_port:
            from prometheus_client import start_http_server

            start_http_server(_options(environment).metrics_port, addr="127.0.0.1", registry=state.registry)
        # Closed on `quit`, which Locust fires after its runner has stopped the users, not on `quitting`, which
        # comes before: a user stopped at shutdown still writes its cancelled record (on a closed file, users
        # looped on "I/O operation on closed file" and Locust ignored SIGTERM).
        event_hooks.quit.add_listener(lambda **__: state.close())
