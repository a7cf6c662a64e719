"""A time limit for each of many concurrent calls, with one timer per short window of starts instead of one per call.

`asyncio.timeout` sets a timer for each call and cancels it after: a TimerHandle pushed onto the event loop's heap,
whose entries compare through a Python `__lt__`, then left there cancelled until the loop sweeps it out; about
7 us per call (timeit, 2026-12-06), and `asyncio.wait_for` adds a task of its own on Python 3.11. From a backlog that
is one DTS call per message. Here the calls that start within one window (a twentieth of the limit) share one timer,
at the window's end plus the limit: each call may run for its limit and at most one window longer (10 s -> at most
10.5 s), which is what a bound on a hung call needs. A call past its time is cancelled and raises TimeoutError,
exactly as with `asyncio.timeout` (whose way of telling its own cancellation from another one this follows).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

# The window, as a share of the limit.
WINDOWS_PER_LIMIT = 20


class Deadlines:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._window = seconds / WINDOWS_PER_LIMIT
        self._window_ends = float("-inf")
        self._members: set[asyncio.Task[object]] = set()
        self._expired: set[asyncio.Task[object]] = set()

    def bound(self) -> Bound:
        """`async with deadlines.bound():` the block raises TimeoutError once it has run out of time."""
        return Bound(self)

    def _join(self, task: asyncio.Task[object]) -> set[asyncio.Task[object]]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._window_ends:  # a new window, with its own timer
            self._window_ends = now + self._window
            self._members = set()
            loop.call_at(self._window_ends + self.seconds, self._expire, self._members)
        self._members.add(task)
        return self._members

    def _expire(self, members: set[asyncio.Task[object]]) -> None:
        for task in members:
            self._expired.add(task)
            task.cancel()
        members.clear()


class Bound:
    __slots__ = ("_cancelling", "_deadlines", "_members", "_task")

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines

    async def __aenter__(self) -> Bound:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.bound() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._members = self._deadlines._join(task)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        task = self._task
        self._members.discard(task)
        expired = self._deadlines._expired
        if task in expired:
            expired.discard(task)
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
