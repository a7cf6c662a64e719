"""Receivers and senders open as fast as the broker answers, instead of one step per 50 ms.

azure-servicebus 7.15 opens a receiver or a sender in a loop (`_open`, in the aio and in the sync module of each)
that reads what has arrived on the socket, then sleeps 50 ms: each of the dozen exchanges of an open (connection,
session, token, links) waits out one sleep. A listener opens its receiver once, but in session mode each session
accepted is a new receiver on a new connection, so this was most of the cost of taking a session: 0.60 s against
localbus (2026-12-06, median of 5), while the broker answered each step within a millisecond. Every command-line
call opens a sync sender or receiver: 0.46 s of each `sbworker publish` or `dlq` went to these pauses.

Each pass of those loops already waits on the socket for the next frame (for up to the handler's socket timeout),
so the sleep is only a pause between two reads. The patch turns exactly that sleep into a yield: it gives each of
the four modules an `asyncio` (aio) or a `time` (sync) whose `sleep(0.05)` is `sleep(0)`; none of them has another
sleep (checked at install). Measured the same way: accepting an available session 0.60 s -> 0.11 s; opening a
sync sender and sending one message 0.46 s -> 0.02 s.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

from sbworker.patches.stand_in import with_sleep

OPEN_POLL = "receiver.open_poll"
SDK_PAUSE = 0.05  # the SDK's sleep between two passes of its open loops


async def _yield_for_pause(delay: float, result: Any = None) -> Any:
    return await asyncio.sleep(0 if delay == SDK_PAUSE else delay, result)


def _no_pause(delay: float) -> None:
    time.sleep(0 if delay == SDK_PAUSE else delay)


def install() -> list[str]:
    """Patch the four modules if each one's only sleep is still its open loop's pause; returns what was installed."""
    from azure.servicebus import _servicebus_receiver, _servicebus_sender
    from azure.servicebus.aio import _servicebus_receiver_async, _servicebus_sender_async

    plan = [(_servicebus_receiver_async, _servicebus_receiver_async.ServiceBusReceiver, "asyncio", asyncio,
             _yield_for_pause, f"await asyncio.sleep({SDK_PAUSE})"),
            (_servicebus_sender_async, _servicebus_sender_async.ServiceBusSender, "asyncio", asyncio,
             _yield_for_pause, f"await asyncio.sleep({SDK_PAUSE})"),
            (_servicebus_receiver, _servicebus_receiver.ServiceBusReceiver, "time", time, _no_pause,
             f"time.sleep({SDK_PAUSE})"),
            (_servicebus_sender, _servicebus_sender.ServiceBusSender, "time", time, _no_pause,
             f"time.sleep({SDK_PAUSE})")]
    if all(getattr(module, name).sleep is sleep for module, _, name, _, sleep, _ in plan):
        return [OPEN_POLL]
    for module, handler, name, real, _, pause in plan:
        try:
            whole, opening = inspect.getsource(module), inspect.getsource(getattr(handler, "_open"))  # noqa: B009
        except (OSError, TypeError, AttributeError):
            return []
        if getattr(module, name, None) is not real or whole.count(f"{name}.sleep(") != 1 or pause not in opening:
            return []
    for module, _, name, real, sleep, _ in plan:
        setattr(module, name, with_sleep(real, sleep))
    return [OPEN_POLL]
