"""Keeps the locks of messages being handled, renewing them one at a time.

The SDK's AutoLockRenewer renews every held message from its own task. Concurrent renewals make the aio SDK send
management transfers out of delivery-id order, which a strict AMQP peer answers by closing the connection, and
then every held message is redelivered. One loop that renews in turn has no such race and costs one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sbworker import patches
from sbworker.observability.metrics import NOOP, Metrics

log = logging.getLogger(__name__)

# Renew when less than this share of the lock is left (at most 10 s before expiry, like the SDK's renewer).
RENEW_SHARE = 0.5
RENEW_AHEAD_MAX = 10.0


class LockKeeper:
    """Renews held messages' locks until they are released, for at most `max_hold` seconds each."""

    def __init__(self, receiver: Any, *, max_hold: float, metrics: Metrics = NOOP) -> None:
        self._receiver = receiver
        self._metrics = metrics
        self._max_hold = max_hold
        # id → (message, held since, lock length in seconds; 0.0 until the renewal loop first looks at it)
        self._held: dict[int, tuple[Any, float, float]] = {}
        self._lock_length = 1.0  # the last one read: how often to look while no held message's is known
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def hold(self, message: Any) -> None:
        # Nothing read from the message here: nearly every message is settled long before the loop looks at it,
        # and reading its lock (the SDK's properties, a datetime) cost about 1% of the listener's CPU per message.
        self._held[id(message)] = (message, time.monotonic(), 0.0)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def release(self, message: Any) -> None:
        self._held.pop(id(message), None)

    async def close(self) -> None:
        self._held.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._held:
                self._wake.clear()
                await self._wake.wait()
            shortest = min((length for _, _, length in self._held.values() if length), default=self._lock_length)
            await asyncio.sleep(min(1.0, max(0.1, shortest / 5)))
            for key, (message, since, length) in list(self._held.items()):
                if key not in self._held or patches.settled(message):
                    self._held.pop(key, None)
                    continue
                held_for = time.monotonic() - since
                if held_for > self._max_hold:
                    log.warning("message %s held longer than %.0fs: letting its lock expire", message.message_id,
                                self._max_hold)
                    self._held.pop(key, None)
                    continue
                locked_until = message.locked_until_utc
                if locked_until is None:  # settled meanwhile, or a session's (its lock is the session's)
                    self._held.pop(key, None)
                    continue
                left = (_aware(locked_until) - datetime.now(UTC)).total_seconds()
                if not length:  # the lock as it was when the message was taken in hand
                    length = self._lock_length = max(0.5, left + held_for)
                    self._held[key] = (message, since, length)
                if left > min(RENEW_AHEAD_MAX, length * RENEW_SHARE):
                    continue
                try:
                    await self._receiver.renew_message_lock(message)
                except Exception as error:
                    log.warning("could not renew the lock of message %s: %s", message.message_id, error)
                    self._metrics.lock_lost()
                    self._held.pop(key, None)
                else:
                    self._metrics.lock_renewed()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
