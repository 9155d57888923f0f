"""The open-loop generator of one Locust user: each request goes out at its due time, in a greenlet of its own,
whatever the earlier requests are doing — so a slow server meets the traffic that arrives, not the traffic a
closed loop would have let through (no coordinated omission).

The user sleeps in Locust's `wait_time` until the next due time and then sends every arrival that is due. An
arrival goes unsent only where `max_inflight` requests are already in flight, or where the step ends before a
late generator reached it; either way it is recorded (status `not_sent`, with the reason), never dropped silently.
With a duration, the arrivals end after it and `on_done` is called once the last answer is in, so that the run can
end (locust_plugin.py) without stopping in the middle of the arrivals: Locust's stop itself blocks its event loop
for tens of milliseconds, which would make the last arrivals late. Stopped earlier, the requests in flight may
finish within Locust's `--stop-timeout`, as the closed loop's do; those still running then are cancelled and
recorded as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
from gevent.pool import Group

from llm_loadtest.arrivals import Schedule
from llm_loadtest.client import RequestSpec, Target, not_sent, stream_request
from llm_loadtest.http import Connection
from llm_loadtest.records import RequestRecord

# epoll waits in whole milliseconds and libev rounds a sleep up to the next one (send lag p50 was 0.7 ms): the user
# wakes this much before the next due time and yields, without sleeping, until it is due.
EARLY_S = 0.001


class OpenLoop:
    def __init__(
        self,
        schedule: Schedule,
        target: Target,
        spec: Callable[[float], RequestSpec],
        finish: Callable[[RequestRecord], None],
        max_inflight: int,
        duration_s: float | None = None,
        on_done: Callable[[], None] | None = None,
        start: float | None = None,
    ) -> None:
        """`spec(due)`: the request due then; `finish`: where every record goes (sent or not); `duration_s`: no
        arrival after this many seconds (None: until the run stops); `on_done`: called once the arrivals are over
        and answered; `start`: the epoch second the schedule starts from, shared by the processes of a distributed
        run so that their schedules interleave (None, or more than a second past: now)."""
        self.schedule, self.target, self.spec, self.finish = schedule, target, spec, finish
        self.max_inflight = max_inflight
        self.end = float("inf") if duration_s is None else duration_s
        self.on_done = on_done
        self.watch: gevent.Greenlet | None = None  # waits for the last answer once the arrivals are over
        self.in_flight = Group()
        self.idle: list[Connection] = []  # keep-alive connections of finished requests, reused by the next ones
        # One moment on both clocks: due times are kept on the monotonic clock and recorded as epoch seconds.
        self.t0, self.t0_epoch = time.perf_counter(), time.time()
        if start is not None and start > self.t0_epoch - 1.0:
            self.t0, self.t0_epoch = self.t0 + (start - self.t0_epoch), start

    def _next(self) -> float:
        """The monotonic time of the next arrival; infinite once the arrivals are over."""
        offset = self.schedule.peek()
        return self.t0 + offset if offset < self.end else float("inf")

    def wait_s(self) -> float:
        """Seconds until the next arrival is due (0 when it is already; an hour once there is none left, as the
        user sleeps until the run stops)."""
        return min(3600.0, max(0.0, self._next() - time.perf_counter() - EARLY_S))

    def fire(self) -> None:
        """Send every arrival due by now, each in its own greenlet (they start as soon as the user sleeps)."""
        while 0 < self._next() - time.perf_counter() <= EARLY_S:
            gevent.sleep(0)  # other greenlets (streams in flight) run meanwhile
        now = time.perf_counter()
        while self._next() <= now:
            due = self.t0_epoch + self.schedule.pop()
            if len(self.in_flight) >= self.max_inflight:
                reason = f"in-flight bound of {self.max_inflight} reached"
                self.finish(not_sent(self.target, self.spec(due), reason))
            else:
                self.in_flight.spawn(self._send, due)
        if self._next() == float("inf") and self.watch is None:
            self.watch = gevent.spawn(self._when_answered)

    def _when_answered(self) -> None:
        self.in_flight.join()
        if self.on_done is not None:
            self.on_done()

    def _send(self, due: float) -> None:
        conn = self.idle.pop() if self.idle else Connection(self.target.url)
        record = stream_request(conn, self.target, self.spec(due), on_cancel=self.finish)
        self.idle.append(conn)
        self.finish(record)

    def stop(self, drain_s: float) -> None:
        """End the step: arrivals already due but never reached (a generator that fell behind) are recorded as not
        sent; requests in flight get `drain_s` to finish, and are cancelled after it."""
        now = time.perf_counter()
        while self._next() <= now:
            due = self.t0_epoch + self.schedule.pop()
            self.finish(not_sent(self.target, self.spec(due), "the step ended before the late generator sent it"))
        try:
            if drain_s > 0:
                self.in_flight.join(timeout=drain_s)
        finally:
            if self.watch is not None and self.watch is not gevent.getcurrent():
                self.watch.kill(block=False)
            self.in_flight.kill(block=True)  # what is left records itself as cancelled (stream_request's on_cancel)
            for conn in self.idle:
                conn.close()
            self.idle.clear()


def split(total: int, parts: int) -> int:
    """Each of `parts` generators' share of a bound on all of them together (at least 1)."""
    return max(1, -(-total // max(1, parts)))
