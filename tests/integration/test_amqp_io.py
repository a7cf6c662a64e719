"""sbworker.patches against the real aio SDK and localbus: each patch still has its effect on the installed SDK.

Each test below passes only while its patch works: a write that does not wait behind a read, an outcome wait
that does not queue for a read, a prefetch count read from the SDK's buffer, a settled flag read from the
message, a close that wakes the keep-alive loop instead of waiting out its sleep, an open that does not pause
between its reads. An SDK upgrade that moves what a patch changes turns one of them red, not just slower.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient as SyncServiceBusClient
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import ServiceBusError

from sbworker import patches
from sbworker.patches import keepalive_wake, open_poll
from tests.fixtures.localbus import LocalBusFactory
from tests.support.wait import eventually

QUEUE = "io"


@pytest.fixture(autouse=True)
def installed() -> None:
    patches.install()


def test_the_installed_sdk_is_a_verified_one_and_every_patch_applies() -> None:
    """An azure-servicebus upgrade must come with a fresh look at its private code (see patches.VERIFIED)."""
    sdk = patches.SERVICEBUS
    assert patches.verified(sdk), f"{sdk} {patches.sdk_version(sdk)}: re-check sbworker/patches/, then add it"
    assert patches.install() == patches.expected()
    assert not patches.verified(sdk, "7.16.0")
    assert patches.receiver_options() == {"socket_timeout": patches.RECEIVER_SOCKET_TIMEOUT}


class WatchedLock(asyncio.Lock):
    """The transport's socket lock, noting every task that queues for it while the test holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.held_by_test = False
        self.queued: list[str] = []

    async def acquire(self) -> bool:
        if self.held_by_test:
            task = asyncio.current_task()
            self.queued.append(task.get_name() if task is not None else "?")
        return await super().acquire()


def _transport(receiver: ServiceBusReceiver) -> object:
    return receiver._handler._connection._transport  # type: ignore[attr-defined]


async def _receive(receiver: ServiceBusReceiver, count: int) -> list:
    held: list = []
    while len(held) < count:
        held += await receiver.receive_messages(max_message_count=count - len(held), max_wait_time=5)
    return held


async def test_a_settlement_neither_writes_nor_waits_behind_a_read(localbus_factory: LocalBusFactory) -> None:
    """While a read holds the socket lock (here: the test, for as long as it likes), a complete still reaches the
    broker (the write lock), and the settler does not queue for a read of its own (the outcome wait)."""
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(ServiceBusMessage("one"))
        async with client.get_queue_receiver(QUEUE, **patches.receiver_options()) as receiver:
            (message,) = await _receive(receiver, 1)
            lock = WatchedLock()
            transport = _transport(receiver)
            transport.socket_lock = lock  # type: ignore[attr-defined]
            await lock.acquire()
            lock.held_by_test = True
            settling = asyncio.create_task(receiver.complete_message(message), name="settler")

            async def gone() -> bool:
                return bus.counts(QUEUE)["total"] == 0

            try:
                await eventually(gone, timeout=10, what="the disposition to reach the broker while a read holds "
                                 "the socket lock")
                assert lock.queued == [], "the settler queued behind the read to read its outcome itself"
            finally:
                lock.held_by_test = False
                lock.release()
            await asyncio.wait_for(settling, 10)  # the outcome is still read, once the lock is free


async def test_concurrent_completes_during_a_receive_are_all_confirmed(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages([ServiceBusMessage(str(i)) for i in range(40)])
        async with client.get_queue_receiver(QUEUE, prefetch_count=40, **patches.receiver_options()) as receiver:
            held = await _receive(receiver, 40)
            # An idle receive call reads the socket while every complete is in flight.
            idle = asyncio.create_task(receiver.receive_messages(max_message_count=1, max_wait_time=0.5))
            await asyncio.sleep(0)
            await asyncio.gather(*(receiver.complete_message(m) for m in held))
            assert all(patches.settled(m) for m in held)
            assert await idle == []
    assert bus.counts(QUEUE)["total"] == 0


async def test_a_frame_read_runs_in_the_callers_task_and_a_timed_out_one_loses_nothing(
        localbus_factory: LocalBusFactory) -> None:
    """The SDK's wait_for ran each frame read as a task of its own; the patch bounds it in the caller's task. A read
    that times out on an idle link returns nothing, and the frames that come later are read whole."""
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_queue_receiver(QUEUE, prefetch_count=5, **patches.receiver_options()) as receiver:
        loop = asyncio.get_running_loop()
        started: list[object] = []
        factory = loop.get_task_factory()

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            started.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(counting)
        try:
            assert await _transport(receiver).receive_frame(timeout=0.05) == (None, None)  # type: ignore[attr-defined]
        finally:
            loop.set_task_factory(factory)
        assert started == [], "the frame read ran in a task of its own"
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages([ServiceBusMessage(str(i)) for i in range(5)])
        held = await _receive(receiver, 5)
        assert sorted(str(m) for m in held) == [str(i) for i in range(5)]


async def test_a_received_message_is_read_without_listing_its_properties(localbus_factory: LocalBusFactory,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """PROPERTIES_TRUTH: asking whether a message has AMQP properties (which each read of its id, subject or content
    type does) no longer lists them, and answers as the SDK's __len__ does."""
    from azure.servicebus.amqp._amqp_message import AmqpMessageHeader, AmqpMessageProperties, DictMixin

    assert bool(AmqpMessageProperties()) == (len(AmqpMessageProperties()) > 0)
    assert bool(AmqpMessageHeader()) == (len(AmqpMessageHeader()) > 0)
    assert not DictMixin() and len(DictMixin()) == 0
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(ServiceBusMessage("one", message_id="m-1", subject="start",
                                                         content_type="application/json"))
        async with client.get_queue_receiver(QUEUE, **patches.receiver_options()) as receiver:
            (message,) = await _receive(receiver, 1)

            def listed(self: object) -> list[str]:
                raise AssertionError("the properties were listed to be tested for truth")

            monkeypatch.setattr(DictMixin, "keys", listed)
            assert (message.message_id, message.subject, message.content_type) == ("m-1", "start",
                                                                                    "application/json")
            monkeypatch.undo()
            await receiver.complete_message(message)


async def test_the_prefetch_buffer_is_counted(localbus_factory: LocalBusFactory) -> None:
    """The settlement's outcome read takes in the transfers the broker sent before the outcome: the listener asks
    the next receive call for exactly those (patches.buffered reads the SDK's queue of them)."""
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages([ServiceBusMessage(str(i)) for i in range(5)])
        async with client.get_queue_receiver(QUEUE, prefetch_count=10, **patches.receiver_options()) as receiver:
            (first,) = await _receive(receiver, 1)
            assert not patches.settled(first)
            await receiver.complete_message(first)
            assert patches.settled(first)
            assert patches.buffered(receiver) == 4
            rest = await receiver.receive_messages(max_message_count=patches.buffered(receiver), max_wait_time=5)
            assert len(rest) == 4


async def test_a_settlement_the_broker_refuses_still_raises(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT1S", "MaxDeliveryCount": 5}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(ServiceBusMessage("late"))
        async with client.get_queue_receiver(QUEUE, **patches.receiver_options()) as receiver:
            (message,) = await receiver.receive_messages(max_message_count=1, max_wait_time=5)

            async def expired() -> bool:
                return bus.counts(QUEUE)["locked"] == 0

            await eventually(expired, timeout=10, what="the broker to expire the lock")
            message._expiry = datetime.now(UTC) + timedelta(minutes=1)  # so the SDK asks the broker, not its clock
            with pytest.raises(ServiceBusError):
                await receiver.complete_message(message)
    assert bus.counts(QUEUE)["total"] == 1


async def test_a_close_wakes_the_keep_alive_loop_and_an_open_client_keeps_pinging(
        localbus_factory: LocalBusFactory) -> None:
    """Without the patch the close waits for the loop's one-second sleep to end by itself: `woken` stays put."""
    bus = localbus_factory({QUEUE: {}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string, keep_alive=1) as client:
        sender = client.get_queue_sender(QUEUE)
        await sender.send_messages(ServiceBusMessage(b"ping"))
        loop_task = sender._handler._keep_alive_thread  # type: ignore[attr-defined]
        await asyncio.sleep(2.5)  # two pauses ended by their timer, with a ping (interval 1 s) after each
        assert not loop_task.done()
        before = keepalive_wake.woken
        await sender.close()
        assert loop_task.done() and loop_task.exception() is None
        assert keepalive_wake.woken == before + 1


def test_a_sync_close_wakes_the_keep_alive_thread(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {}}, config_path=None)
    with SyncServiceBusClient.from_connection_string(bus.connection_string) as client:
        sender = client.get_queue_sender(QUEUE)
        sender.send_messages(ServiceBusMessage(b"ping"))
        thread = sender._handler._keep_alive_thread  # type: ignore[attr-defined]
        assert thread.is_alive()
        before = keepalive_wake.woken
        sender.close()
        assert not thread.is_alive()
        assert keepalive_wake.woken == before + 1


async def test_aio_senders_and_receivers_open_without_pausing_between_reads(
        localbus_factory: LocalBusFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the patch each pass of the SDK's open loop sleeps 50 ms (open_poll.SDK_PAUSE)."""
    bus = localbus_factory({QUEUE: {}}, config_path=None)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def noted(delay: float, result: Any = None) -> Any:
        slept.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", noted)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(ServiceBusMessage(b"one"))
        async with client.get_queue_receiver(QUEUE) as receiver:
            assert len(await receiver.peek_messages(1)) == 1
    assert slept and open_poll.SDK_PAUSE not in slept  # the passes yielded (sleep(0)) instead


def test_sync_senders_and_receivers_open_without_pausing_between_reads(
        localbus_factory: LocalBusFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = localbus_factory({QUEUE: {}}, config_path=None)
    slept: list[float] = []
    real_sleep = time.sleep

    def noted(delay: float) -> None:
        slept.append(delay)
        real_sleep(delay)

    monkeypatch.setattr(time, "sleep", noted)
    with SyncServiceBusClient.from_connection_string(bus.connection_string) as client:
        with client.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage(b"one"))
        with client.get_queue_receiver(QUEUE) as receiver:
            assert len(receiver.peek_messages(1)) == 1
    assert open_poll.SDK_PAUSE not in slept
