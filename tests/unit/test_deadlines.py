"""listener.deadlines: a call past its limit raises TimeoutError (as under asyncio.timeout), within one window of
its limit; a cancellation from elsewhere stays a cancellation; calls that start together share one timer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from listener.deadlines import WINDOWS_PER_LIMIT, Deadlines


async def test_a_call_past_its_limit_raises_timeout_within_one_window() -> None:
    deadlines = Deadlines(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadlines.bound():
            await asyncio.sleep(10)
    took = time.monotonic() - started
    assert 0.2 <= took < 0.2 + 0.2 / WINDOWS_PER_LIMIT + 0.1  # (0.1: a loaded machine's scheduling)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # the cancellation was its own


async def test_calls_within_their_limit_are_untouched_and_leave_nothing_behind() -> None:
    deadlines = Deadlines(0.2)

    async def call(n: int) -> int:
        async with deadlines.bound():
            await asyncio.sleep(0.01)
            return n

    assert await asyncio.gather(*(call(n) for n in range(50))) == list(range(50))
    await asyncio.sleep(0.3)  # past the shared timer: it finds nobody to cancel
    assert not deadlines._members and not deadlines._expired


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0)

    async def call() -> None:
        async with deadlines.bound():
            await asyncio.sleep(10)

    task = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._expired


async def test_an_outer_cancellation_during_the_expiry_is_not_swallowed() -> None:
    """Timed out and cancelled by its owner at once: the owner's cancellation wins (asyncio.timeout's rule)."""
    deadlines = Deadlines(0.05)
    entered = asyncio.Event()

    async def call() -> None:
        async with deadlines.bound():
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(call())
    await entered.wait()
    loop = asyncio.get_running_loop()
    loop.call_at(deadlines._window_ends + deadlines.seconds, task.cancel)  # right after the deadline's own cancel
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_calls_starting_together_share_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of it: 100 calls started within a window set one timer, where asyncio.timeout sets 100."""
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    deadlines = Deadlines(10.0)

    async def call() -> None:
        async with deadlines.bound():
            await asyncio.sleep(0)

    await asyncio.gather(*(call() for _ in range(100)))
    assert len([t for t in timers if t > loop.time() + 9]) == 1
