"""Bounded concurrency: at most `max_concurrent_messages` in hand, free slots refilled by receive calls.

Each received message runs as a task of its own; on stop the tasks get the grace period, and after a connection
error they are cancelled (their locks die with the link, and Service Bus redelivers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver

from listener.dead_receiver import Receiving
from sbworker import patches
from sbworker.observability.metrics import Metrics

log = logging.getLogger(__name__)

# How long one receive call waits for a message when the queue is idle: it bounds how late a stop is noticed.
RECEIVE_WAIT_SECONDS = 0.25
# How long a few free concurrency slots wait for more to free before a receive call fills them (see `fill`).
REFILL_WAIT_SECONDS = 0.005

Handler = Callable[[ServiceBusReceivedMessage], Coroutine[Any, Any, None]]


class Slots:
    def __init__(self, limit: int, *, prefetch: int, metrics: Metrics) -> None:
        self._limit = limit
        self._prefetch = prefetch
        self._metrics = metrics
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    async def fill(self, receiver: ServiceBusReceiver, stop: asyncio.Event, handle: Handler,
                   alive: Callable[[], None]) -> None:
        """Receive into free slots until `stop`; each message is handed to `handle` in a task of its own."""
        limit = self._limit
        # Under load, refill slots a few at a time (one receive call per message cost 7% more CPU per message from
        # a backlog); a few slots left free by slow handlers are still used after REFILL_WAIT_SECONDS.
        refill = max(1, limit // 8)
        receiving = Receiving(receiver)
        while not stop.is_set():
            free = limit - len(self._in_flight)
            if free < refill:
                self._slot_freed.clear()
                try:
                    async with asyncio.timeout(None if free <= 0 else REFILL_WAIT_SECONDS):
                        await self._slot_freed.wait()
                    continue
                except TimeoutError:
                    pass
            # With a prefetch buffer, ask only for what the buffer already holds (at least one): once a first
            # message arrives the SDK otherwise waits up to 0.2 s more for a batch of `free` to fill (that wait was
            # our whole p50 latency). Without a buffer, each call is a credit round trip, so ask for as many as we
            # can take.
            want = min(free, max(1, patches.buffered(receiver))) if self._prefetch > 0 else free
            messages = await receiving.receive(want, RECEIVE_WAIT_SECONDS)
            if messages:
                alive()
            for message in messages:
                task = asyncio.create_task(handle(message))
                self._in_flight.add(task)
                self._metrics.in_flight(1)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._metrics.in_flight(-1)
        self._slot_freed.set()

    async def drain(self, grace: float) -> None:
        """Give in-flight messages the grace period, then abandon what is still running."""
        if not self._in_flight:
            return
        log.info("finishing %d in-flight message(s), up to %.0fs", len(self._in_flight), grace)
        _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def cancel(self) -> None:
        """After a connection error, handlers still running are cancelled; their locks die with the link."""
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
