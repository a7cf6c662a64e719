"""Sessions on localbus through the asyncio azure-servicebus SDK: named and next-available sessions, state,
renewal (by hand and by AutoLockRenewer), expiry, FIFO and the dead-letter queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient
from azure.servicebus.exceptions import OperationTimeoutError, SessionLockLostError

from localbus import LocalBus

Q = "orders"
LONG = "long-locks"
RENEWED = "renewed"  # 5 s locks (Service Bus's shortest): AutoLockRenewer looks only once a second
QUEUES: dict[str, Any] = {Q: {"RequiresSession": True, "LockDuration": "PT1S"},
                          LONG: {"RequiresSession": True, "LockDuration": "PT30S"},
                          RENEWED: {"RequiresSession": True, "LockDuration": "PT5S"}}


@pytest.fixture
async def sb() -> AsyncIterator[tuple[LocalBus, ServiceBusClient]]:
    with LocalBus(port=0, config_path=None, queues=QUEUES) as bus:
        async with ServiceBusClient.from_connection_string(bus.connection_string, retry_total=0) as sb_client:
            yield bus, sb_client


async def _send(sb: ServiceBusClient, *pairs: tuple[str, str], queue: str = Q) -> None:
    async with sb.get_queue_sender(queue) as s:
        await s.send_messages([ServiceBusMessage(body, session_id=sid) for body, sid in pairs])


async def test_named_and_next_available_sessions_in_order_with_state(sb: tuple[LocalBus, ServiceBusClient]) -> None:
    _, client = sb
    await _send(client, *[(f"{sid}{i}", sid) for i in range(3) for sid in "AB"], queue=LONG)
    async with client.get_queue_receiver(LONG, session_id="A") as r:
        await r.session.set_state("seen A")
        got = []
        while len(got) < 3:
            batch = await r.receive_messages(max_message_count=3, max_wait_time=5)
            got += batch
            for m in batch:
                await r.complete_message(m)
        assert [str(m) for m in got] == ["A0", "A1", "A2"]
        assert await r.session.get_state() == b"seen A"
    async with client.get_queue_receiver(LONG, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as r:
        batch = await r.receive_messages(max_message_count=3, max_wait_time=5)
        assert r.session.session_id == "B" and [str(m) for m in batch] == ["B0", "B1", "B2"]
        for m in batch:
            await r.complete_message(m)
    with pytest.raises(OperationTimeoutError):
        async with client.get_queue_receiver(LONG, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1) as r:
            await r.receive_messages(max_wait_time=1)


async def test_lock_expiry_renewal_and_the_dead_letter_queue(sb: tuple[LocalBus, ServiceBusClient]) -> None:
    bus, client = sb
    await _send(client, ("x", "X"), ("y", "X"))
    async with client.get_queue_receiver(Q, session_id="X") as r:
        [x] = await r.receive_messages(max_wait_time=5)
        await asyncio.sleep(0.6)
        await r.session.renew_lock()
        await asyncio.sleep(0.6)
        await r.dead_letter_message(x, reason="r", error_description="d")  # 1.2 s after: renewed, still ours
        [y] = await r.receive_messages(max_wait_time=5)
        await asyncio.to_thread(bus.wait_for, lambda b: b.entity(Q).sessions["X"].holder is None, 10)
        with pytest.raises(SessionLockLostError):
            await r.complete_message(y)
    async with client.get_queue_receiver(Q, session_id="X") as r:
        [again] = await r.receive_messages(max_wait_time=5)
        await r.complete_message(again)
    assert (str(again), again.delivery_count) == ("y", 1)
    async with client.get_queue_receiver(Q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
        [dead] = await r.receive_messages(max_wait_time=5)
    assert (str(dead), dead.session_id, dead.dead_letter_reason) == ("x", "X", "r")


@pytest.mark.slow
async def test_auto_lock_renewer_keeps_a_session_past_its_lock_duration(sb: tuple[LocalBus, ServiceBusClient]) -> None:
    _, client = sb
    await _send(client, ("a", "A"), queue=RENEWED)
    async with client.get_queue_receiver(RENEWED, session_id="A") as r, AutoLockRenewer() as renewer:
        renewer.register(r, r.session, max_lock_renewal_duration=60)
        [m] = await r.receive_messages(max_wait_time=5)
        await asyncio.sleep(6.5)  # longer than the 5 s lock: only the renewer keeps the session ours
        await r.complete_message(m)
        assert r.session.auto_renew_error is None
