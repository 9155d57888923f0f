"""Bounded waits on real conditions (a gauge, a record count, a query result, a socket): they return as soon as the
condition holds, and fail with what they last saw, and the tail of a log where there is one, when it does not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
LOG_TAIL = 3000


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    timeout: float,
    what: str,
    show: Callable[[T], str] = repr,
    log: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> T:
    """Call `probe` until `done(result)` holds and return that result. After `timeout` seconds, fail: `what` was
    awaited, `show(result)` is what the last probe saw, and `log()`'s tail says what the process was doing."""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe()
        if done(seen):
            return seen
        if time.monotonic() >= deadline:
            raise AssertionError(failure(f"waited {timeout:g}s for {what}; last saw: {show(seen)}", log))
        time.sleep(interval)


def failure(message: str, log: Callable[[], str] | None = None) -> str:
    """`message`, then the tail of `log()` (a log that cannot be read says so instead of hiding the failure)."""
    if log is None:
        return message
    try:
        text = log()
    except OSError as exc:
        text = f"(log unreadable: {exc})"
    return f"{message}\n--- log tail ---\n{text[-LOG_TAIL:]}"
