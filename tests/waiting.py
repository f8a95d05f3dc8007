"""Waiting in tests for something another process does, with a deadline.

Every wait in the test suite goes through :func:`wait_for`, so that none can hang a run (a wait
without a deadline hangs until the CI job's own timeout, and says nothing about what it waited
for), and so that a wait that runs out says what it waited for and what it last saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def _truthy(value: object) -> bool:
    return bool(value)


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 1.0,
    until: Callable[[T], bool] = _truthy,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until its value is true; return that value.

    ``predicate`` is called at least once, and once more after the deadline has passed, so that a
    slow machine (or a debugger) does not turn a late success into a failure.

    :param predicate: what to look at; its value is returned, and shown when the wait runs out.
    :param timeout: seconds to wait at most.
    :param what: what is waited for, for the error message ("job 123 ends").
    :param interval: seconds between two calls.
    :param until: when the wait is over, given the value (default: the value is true). Lets the
        message show a whole value (e.g. every sacct row) rather than ``False``.
    :raises AssertionError: the deadline passed; the message has ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout:g} s (last: {value!r})")
        time.sleep(interval)
