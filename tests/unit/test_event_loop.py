"""sbworker.core.event_loop runs the service's coroutine on the loop EVENT_LOOP resolved to."""

from __future__ import annotations

import asyncio

import pytest

from sbworker.core import event_loop


async def _kind_and_sleep() -> str:
    await asyncio.sleep(0.001)  # a timer on that loop
    return event_loop.running_kind()


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_run_uses_the_named_loop(kind: str) -> None:
    assert event_loop.run(_kind_and_sleep(), kind) == kind


def test_only_the_created_loop_is_replaced() -> None:
    """A loop made elsewhere afterwards (the durabletask worker makes its own) is asyncio's again."""
    event_loop.run(_kind_and_sleep(), "uvloop")
    assert asyncio.run(_kind_and_sleep()) == "asyncio"
