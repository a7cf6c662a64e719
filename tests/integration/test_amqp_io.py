"""listener/amqp_io: settlements stop waiting for idle socket reads, and their outcomes are still confirmed.

Real aio SDK against localbus: many completes at once while a receive call holds the socket (the case that used
to wait), then a lock the broker has expired, whose settlement must still fail (the outcome is still checked).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError

from listener import amqp_io
from tests.fixtures.localbus import LocalBusFactory

QUEUE = "io"


@pytest.fixture(autouse=True)
def installed() -> None:
    amqp_io.install()


def test_the_installed_sdk_is_a_verified_one() -> None:
    """An azure-servicebus upgrade must come with a fresh look at its private I/O (see amqp_io.VERIFIED_VERSIONS)."""
    from azure.servicebus import __version__

    assert amqp_io.verified(), f"azure-servicebus {__version__}: re-check listener/amqp_io.py, then add it"
    assert not amqp_io.verified("7.16.0")


async def test_concurrent_completes_during_a_receive_are_all_confirmed(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT30S"}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages([ServiceBusMessage(str(i)) for i in range(40)])
        async with client.get_queue_receiver(QUEUE, prefetch_count=40, socket_timeout=0.02) as receiver:
            held: list = []
            while len(held) < 40:
                held += await receiver.receive_messages(max_message_count=40, max_wait_time=1)
            # An idle receive call reads the socket while every complete is in flight.
            idle = asyncio.create_task(receiver.receive_messages(max_message_count=1, max_wait_time=0.5))
            await asyncio.sleep(0)
            started = asyncio.get_running_loop().time()
            await asyncio.gather(*(receiver.complete_message(m) for m in held))
            took = asyncio.get_running_loop().time() - started
            assert await idle == []
    assert bus.counts(QUEUE)["total"] == 0
    assert took < 5, "each complete waited out reads"  # a generous bound: only a hang would miss it


async def test_a_settlement_the_broker_refuses_still_raises(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({QUEUE: {"LockDuration": "PT1S", "MaxDeliveryCount": 5}}, config_path=None)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages(ServiceBusMessage("late"))
        async with client.get_queue_receiver(QUEUE, socket_timeout=0.02) as receiver:
            (message,) = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
            await asyncio.sleep(1.5)  # the broker's lock expires
            message._expiry = datetime.now(UTC) + timedelta(minutes=1)  # so the SDK asks the broker, not its clock
            with pytest.raises(ServiceBusError):
                await receiver.complete_message(message)
    assert bus.counts(QUEUE)["total"] == 1
