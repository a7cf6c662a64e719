"""Batched completions (sbworker/patches/settle_batch.py) against the real aio SDK and localbus.

A batch must settle each of its messages exactly once, with each message's own outcome checked: a lock the broker
has lost still raises for that message alone, messages the batch does not take go through the SDK, and a caller
that stops waiting does not stop its settlement.
"""

from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import ServiceBusError

from sbworker import patches
from sbworker.patches import amqp_io
from sbworker.patches.settle_batch import SettlementBatch, runs
from tests.fixtures.localbus import LocalBusFactory
from tests.integration.harness import eventually

QUEUE = "batch"
DLQ = QUEUE + "/$DeadLetterQueue"


@pytest.fixture(autouse=True)
def installed() -> None:
    patches.install()


def test_runs_of_consecutive_ids() -> None:
    assert runs([]) == []
    assert runs([7]) == [(7, 7)]
    assert runs([1, 2, 3, 5, 6, 9]) == [(1, 3), (5, 6), (9, 9)]


async def _receive(receiver: ServiceBusReceiver, count: int) -> list[ServiceBusReceivedMessage]:
    held: list[ServiceBusReceivedMessage] = []
    while len(held) < count:
        held += await receiver.receive_messages(max_message_count=count - len(held), max_wait_time=5)
    return held


async def _send(client: ServiceBusClient, bodies: list[str]) -> None:
    async with client.get_queue_sender(QUEUE) as sender:
        await sender.send_messages([ServiceBusMessage(body) for body in bodies])


def _batch(receiver: ServiceBusReceiver) -> SettlementBatch:
    batch = patches.settlement_batch(receiver)
    assert batch is not None, "the batched settlement is not active on this SDK version"
    return batch


async def test_completions_share_frames_and_each_message_is_settled_once(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        await _send(client, [str(i) for i in range(30)])
        async with client.get_queue_receiver(QUEUE, prefetch_count=30, **patches.receiver_options()) as receiver:
            held = await _receive(receiver, 30)
            batch = _batch(receiver)
            # Delivery ids 1-20 but the 6th: two runs, two frames; then the 6th and 21-30: two more.
            first, second = held[:5] + held[6:20], held[5:6] + held[20:]
            assert await asyncio.gather(*(batch.complete(m) for m in first)) == [None] * len(first)
            assert await asyncio.gather(*(batch.complete(m) for m in second)) == [None] * len(second)
            assert (batch.frames, batch.batched) == (4, 30)
            assert all(patches.settled(m) for m in held)
            # Settled at the broker, once: nothing is left, nothing comes back, nothing was dead-lettered.
            assert bus.counts(QUEUE)["total"] == 0
            assert await receiver.receive_messages(max_message_count=30, max_wait_time=1) == []
    assert bus.counts(DLQ)["total"] == 0


async def test_a_lock_the_broker_lost_still_raises_for_that_message_alone(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT2S", "MaxDeliveryCount": 5}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        await _send(client, ["late"])
        async with client.get_queue_receiver(QUEUE, **patches.receiver_options()) as receiver:
            (late,) = await _receive(receiver, 1)

            async def expired() -> bool:
                return bus.counts(QUEUE)["locked"] == 0

            await eventually(expired, timeout=10, what="the broker to expire the lock")
            late._expiry = datetime.now(UTC) + timedelta(minutes=1)  # so the batch asks the broker, not the clock
            await _send(client, ["a", "b", "c"])
            fresh = await _receive(receiver, 4)  # the three, and "late" delivered again under a new lock
            batch = _batch(receiver)
            outcomes = await asyncio.gather(*(batch.complete(m) for m in [late, *fresh]))
            assert isinstance(outcomes[0], ServiceBusError), outcomes[0]
            assert outcomes[1:] == [None] * 4
            assert not patches.settled(late)
            assert all(patches.settled(m) for m in fresh)
    assert bus.counts(QUEUE)["total"] == 0
    assert bus.counts(DLQ)["total"] == 0


async def test_a_message_the_batch_does_not_take_goes_through_the_sdk(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        await _send(client, ["deferred"])
        async with client.get_queue_receiver(QUEUE, **patches.receiver_options()) as receiver:
            (first,) = await _receive(receiver, 1)
            await receiver.defer_message(first)
            (deferred,) = await receiver.receive_deferred_messages([first.sequence_number])
            batch = _batch(receiver)
            assert await batch.complete(deferred) is None  # settled over the management link, as the SDK does
            assert batch.frames == 0
            assert patches.settled(deferred)
    assert bus.counts(QUEUE)["total"] == 0


async def test_a_caller_that_stops_waiting_does_not_stop_the_settlement(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        await _send(client, ["x", "y"])
        async with client.get_queue_receiver(QUEUE, prefetch_count=2, **patches.receiver_options()) as receiver:
            held = await _receive(receiver, 2)
            batch = _batch(receiver)
            waiting = [asyncio.ensure_future(asyncio.shield(batch.complete(m))) for m in held]
            await asyncio.sleep(0)
            for task in waiting:
                task.cancel()

            async def settled() -> bool:
                return bus.counts(QUEUE)["total"] == 0 and all(patches.settled(m) for m in held)

            await eventually(settled, timeout=10, what="the abandoned waiters' messages to be settled anyway")


class _Transport:
    def __init__(self) -> None:
        self.socket_lock = asyncio.Lock()


class _Connection:
    """Only what the outcome-wait patch looks at before it calls the SDK's listen: a transport with a socket lock."""

    def __init__(self) -> None:
        self._transport = _Transport()
        self.reads = 0


async def test_a_wait_for_several_outcomes_yields_while_another_reader_holds_the_socket() -> None:
    """One outcome of several arrived (the event is set) while someone else reads: each further wait must give the
    loop back, or the reader never runs and the other outcomes never arrive (it spun for the SDK's 60 s)."""

    async def sdk_listen(connection: Any, wait: Any, batch: int, **kwargs: Any) -> None:
        connection.reads += 1

    listen = amqp_io._listen(sdk_listen)
    connection = _Connection()
    await connection._transport.socket_lock.acquire()  # another coroutine is reading
    others_ran = 0

    async def other() -> None:
        nonlocal others_ran
        while True:
            others_ran += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other())
    arrived = asyncio.Event()
    arrived.set()  # the first outcome is in

    async def wait_for_the_rest() -> None:
        for _ in range(20):
            await listen(connection)

    context = contextvars.copy_context()
    context.run(amqp_io._awaiting_outcome.set, arrived)
    await asyncio.get_running_loop().create_task(wait_for_the_rest(), context=context)
    ticker.cancel()
    assert others_ran > 0
    assert not arrived.is_set()
    assert connection.reads == 0  # it waited for the reader instead of queueing for a read of its own
