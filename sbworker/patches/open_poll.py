"""A receiver's link opens as fast as the broker answers, instead of one step per 50 ms.

azure-servicebus 7.15's aio receiver opens in a loop (`ServiceBusReceiver._open`) that reads what has arrived on
the socket, then sleeps 50 ms: each of the dozen exchanges of an open (connection, session, token, links) waits
out one sleep. A listener opens its receiver once, but in session mode each session accepted is a new receiver on
a new connection, so this was most of the cost of taking a session: 0.60 s against localbus (2026-12-06, median
of 5), while the broker answered each step within a millisecond.

Each pass of that loop already waits on the socket for the next frame (for up to the receiver's socket timeout),
so the sleep is only a pause between two reads. The patch turns exactly that sleep into a yield: it gives the
receiver module an `asyncio` whose `sleep(0.05)` is `sleep(0)`; the module has no other sleep (checked at install).
Measured the same way: accepting an available session 0.60 s -> 0.11 s.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

OPEN_POLL = "receiver.open_poll"
SDK_PAUSE = 0.05  # the SDK's sleep between two passes of its open loop


class _FasterOpen:
    """The `asyncio` module as the receiver module sees it, but for the pause of its open loop."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(0 if delay == SDK_PAUSE else delay, result)


def install() -> list[str]:
    """Patch the receiver module if its one sleep is still the open loop's pause; returns what was installed."""
    from azure.servicebus.aio import _servicebus_receiver_async as module

    if isinstance(module.asyncio, _FasterOpen):
        return [OPEN_POLL]
    try:
        whole, opening = inspect.getsource(module), inspect.getsource(module.ServiceBusReceiver._open)
    except (OSError, TypeError, AttributeError):
        return []
    if module.asyncio is not asyncio or whole.count("asyncio.sleep(") != 1 \
            or f"await asyncio.sleep({SDK_PAUSE})" not in opening:
        return []
    module.asyncio = _FasterOpen()  # type: ignore[assignment]
    return [OPEN_POLL]
