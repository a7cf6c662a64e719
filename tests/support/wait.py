"""Waiting for something the test cannot subscribe to: poll a check until it gives a truthy value, or fail naming
what was awaited (and the last value seen). `until` for plain code, `eventually` inside an event loop.

A wait is for a positive condition only: a test never sleeps and then asserts that something did not happen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
INTERVAL = 0.05


def until(check: Callable[[], T], *, what: str = "the condition", timeout: float = 30.0, interval: float = INTERVAL,
          on_timeout: Callable[[], str] | None = None) -> T:
    """The first truthy value of `check()`; AssertionError after `timeout` seconds (`on_timeout` adds details)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(what, timeout, last, on_timeout))
        time.sleep(interval)


async def eventually(check: Callable[[], Awaitable[T] | T], *, what: str = "the condition", timeout: float = 30.0,
                     interval: float = INTERVAL, task: asyncio.Task[Any] | None = None) -> T:
    """`until` for a coroutine; `check` may be async. With `task` (a service under test), fail at once, with its
    error, if it ends first."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = check()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last  # type: ignore[no-any-return]
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"the task ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(what, timeout, last, None))
        await asyncio.sleep(interval)


def _timed_out(what: str, timeout: float, last: Any, on_timeout: Callable[[], str] | None) -> str:
    extra = f"\n{on_timeout()}" if on_timeout else ""
    return f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}"
