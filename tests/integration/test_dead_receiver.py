"""A receiver that no longer receives is replaced, and the listener keeps running meanwhile.

azure-servicebus 7.15's AMQP receive client can shut itself down for good (on a ValueError from a step of its
connection) while the receiver keeps calling it; each receive then returns nothing at once, without yielding to the
event loop. Here the real SDK receiver of the running listener, on localbus, is put in that state exactly as the SDK
puts it (its client's `_shutdown` flag), and the listener has to notice and reconnect (listener/dead_receiver.py).
Before that, the listener spun in its receive loop for good and starved everything else on its loop: this test then
hangs until pytest's timeout.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusReceiver

from listener.dead_receiver import DEAD_RECEIVER_CALLS
from listener.slots import RECEIVE_WAIT_SECONDS, Slots
from localbus import LocalBus
from sbworker.observability.metrics import Metrics
from tests.fixtures.dts import DtsBackend
from tests.integration.harness import QUEUE, SESSION_QUEUE, SESSION_QUEUE_SOURCE, Harness, listener_settings
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("dts_worker")
PREFETCH = 7  # tells the listener's receiver apart from the harness's own peekers


@pytest.fixture
def bus() -> Iterator[LocalBus]:
    with LocalBus(port=0, queues={QUEUE: {"LockDuration": "PT30S"}}) as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    async with Harness(bus, dts_backend.settings, listener_settings=listener_settings(prefetch_count=PREFETCH)) as h:
        yield h


def listener_receiver_or_none() -> ServiceBusReceiver | None:
    """The listener's open receiver (it keeps it to itself: found among the live objects), if it has one."""
    found = [o for o in gc.get_objects() if isinstance(o, ServiceBusReceiver) and getattr(o, "_running", False)
             and o._prefetch_count == PREFETCH]
    assert len(found) <= 1, found
    return found[0] if found else None


def listener_receiver() -> ServiceBusReceiver:
    receiver = listener_receiver_or_none()
    assert receiver is not None, "no open receiver"
    return receiver


async def test_a_receiver_that_stopped_receiving_is_replaced(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    first = await h.start("hello_cities")
    await h.wait_for_state(first, lambda s: s is not None)
    dead = listener_receiver()
    dead._handler._shutdown = True  # type: ignore[attr-defined]  # what the SDK sets on that ValueError

    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(ticking())
    try:
        await eventually(lambda: any(r.levelno == logging.WARNING and "no longer receives" in r.getMessage()
                                     for r in caplog.records), what="the dead receiver noticed", timeout=20)
        # Then a message the new receiver must take (a frame another link's read takes in would still reach the
        # dead receiver's buffer: it has to be gone first).
        await eventually(lambda: listener_receiver_or_none() not in (None, dead), what="a new receiver", timeout=20)
        second = await h.start("hello_cities")
        await h.wait_for_state(second, lambda s: s is not None, timeout=30)
    finally:
        ticker.cancel()
    assert ticks > 0  # the loop kept running other tasks


async def test_an_idle_receiver_is_not_taken_for_dead(bus: LocalBus) -> None:
    """Empty receives that wait their time are an idle queue, not a dead receiver."""
    from azure.servicebus.aio import ServiceBusClient

    async with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_queue_receiver(QUEUE, prefetch_count=PREFETCH) as receiver:
        stop = asyncio.Event()

        async def never(_message: object) -> None:
            raise AssertionError("the queue is empty")

        filling = asyncio.create_task(Slots(8, prefetch=PREFETCH, metrics=Metrics()).fill(
            receiver, stop, never, lambda: None))
        await asyncio.sleep(RECEIVE_WAIT_SECONDS * (DEAD_RECEIVER_CALLS + 2))  # more empty receives than that
        assert not filling.done(), filling
        stop.set()
        await eventually(filling.done, what="fill to end on stop", timeout=5)
        assert filling.exception() is None


async def test_a_session_receiver_that_stopped_receiving_is_replaced(dts_backend: DtsBackend,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """In session mode the slot releases that session (its receiver is dead) and accepts the next, which is the same
    session's remaining messages: long before the session would have gone idle."""
    caplog.set_level(logging.WARNING)
    queues = {SESSION_QUEUE: {"RequiresSession": True, "LockDuration": "PT30S"}}
    settings = listener_settings(max_concurrent_sessions=1, prefetch_count=PREFETCH, session_idle_seconds=60.0)
    session = f"dead-{uuid.uuid4().hex[:8]}"

    def start(n: int) -> ServiceBusMessage:
        return ServiceBusMessage(json.dumps({"orchestration": "hello_cities", "instance_id": f"{session}-{n}"}),
                                 subject="start", content_type="application/json", session_id=session)

    with LocalBus(port=0, config_path=None, queues=queues) as bus:
        async with Harness(bus, dts_backend.settings, source=SESSION_QUEUE_SOURCE, listener_settings=settings) as h:
            await h.send_many([start(0)])
            await h.wait_for_state(f"{session}-0", lambda s: s is not None)
            dead = listener_receiver()
            dead._handler._shutdown = True  # type: ignore[attr-defined]

            def released() -> bool:
                return any(r.levelno == logging.WARNING and session in r.getMessage()
                           and "no longer receives" in r.getMessage() for r in caplog.records)

            await eventually(released, what="the session released for its dead receiver", timeout=20)
            # (Only then the next message: the session's links share one connection, and a frame that another link's
            # read takes in still reaches a dead receiver's buffer.)
            await h.send_many([start(1)])
            await h.wait_for_state(f"{session}-1", lambda s: s is not None, timeout=30)
