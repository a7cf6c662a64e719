"""End to end with the asyncio azure-servicebus SDK (the listener's flavour)."""

from __future__ import annotations

import asyncio

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import MessageLockLostError

from localbus import LocalBus
from tests.fixtures.localbus import LocalBusFactory

from .sdk import AsyncFakeCredential, bodies

Q = "workflow-requests"


def aclient(bus: LocalBus) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(bus.connection_string)


async def test_aio_send_receive_and_every_settlement(localbus: LocalBus) -> None:
    async with aclient(localbus) as sb:
        async with sb.get_queue_sender(Q, keep_alive=None) as s:
            batch = await s.create_message_batch()
            for body in ("complete", "abandon", "dead", "defer"):
                batch.add_message(ServiceBusMessage(body))
            await s.send_messages(batch)
        async with sb.get_queue_receiver(Q) as r:
            got = await r.receive_messages(max_message_count=4, max_wait_time=5)
            assert bodies(got) == ["complete", "abandon", "dead", "defer"]
            complete, abandon, dead, defer = got
            await r.complete_message(complete)
            await r.abandon_message(abandon)
            await r.dead_letter_message(dead, reason="Invalid", error_description="schema")
            await r.defer_message(defer)
            [again] = await r.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(again) == "abandon" and again.delivery_count == 1
            await r.complete_message(again)
            [deferred] = await r.receive_deferred_messages([defer.sequence_number])
            await r.complete_message(deferred)
        assert localbus.counts(Q)["total"] == 0
        async with sb.get_queue_receiver(Q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            [m] = await dlq.receive_messages(max_message_count=1, max_wait_time=5)
            assert (str(m), m.dead_letter_reason, m.dead_letter_error_description) == ("dead", "Invalid", "schema")


async def test_aio_auto_lock_renewer_outlives_short_locks(localbus_factory: LocalBusFactory) -> None:
    """3 s locks (the renewer polls each second): the registered message stays locked past its first expiry."""
    bus = localbus_factory({"three-second-lock": {"LockDuration": "PT3S"}})
    async with aclient(bus) as sb:
        async with sb.get_queue_sender("three-second-lock", keep_alive=None) as s:
            await s.send_messages([ServiceBusMessage("renewed"), ServiceBusMessage("lapses")])
        async with sb.get_queue_receiver("three-second-lock") as r, AutoLockRenewer(max_lock_renewal_duration=30) as ar:
            renewed, lapses = await r.receive_messages(max_message_count=2, max_wait_time=5)
            first_until = renewed.locked_until_utc
            ar.register(r, renewed)
            # 'lapses' is not renewed: it comes back when its lock expires, while 'renewed' is still locked.
            [back] = await r.receive_messages(max_message_count=1, max_wait_time=10)
            assert back.sequence_number == lapses.sequence_number and back.delivery_count == 1
            assert bus.counts("three-second-lock")["locked"] == 2
            assert first_until is not None and renewed.locked_until_utc is not None
            assert renewed.locked_until_utc > first_until
            await r.complete_message(renewed)
            await r.complete_message(back)
            with pytest.raises(MessageLockLostError):
                await r.complete_message(lapses)
        assert bus.counts("three-second-lock")["total"] == 0


async def test_aio_jwt_credential(localbus_factory: LocalBusFactory) -> None:
    localbus = localbus_factory(accept_jwt=True)
    credential = AsyncFakeCredential()
    sb = ServiceBusClient(localbus.endpoint, credential, use_tls=False)  # type: ignore[arg-type]
    async with sb, sb.get_queue_sender(Q, keep_alive=None) as s:
        await s.send_messages(ServiceBusMessage("entra"))
    token_type, token = localbus.last_token(Q) or ("", "")
    assert (token_type, token) == ("jwt", f"fake-jwt-{len(credential.scopes)}")
    assert localbus.counts(Q)["active"] == 1


async def test_aio_competing_receivers(localbus: LocalBus) -> None:
    total = 40
    seen: list[list[int]] = [[], []]

    async def consume(r: ServiceBusReceiver, out: list[int]) -> None:
        while len(seen[0]) + len(seen[1]) < total:
            batch: list[ServiceBusReceivedMessage] = await r.receive_messages(max_message_count=4, max_wait_time=0.5)
            for m in batch:
                out.append(m.sequence_number)
                await r.complete_message(m)

    sb = aclient(localbus)
    async with sb, sb.get_queue_receiver(Q) as r1, sb.get_queue_receiver(Q) as r2, \
            sb.get_queue_sender(Q, keep_alive=None) as s:
        consumers = [asyncio.create_task(consume(r, out)) for r, out in ((r1, seen[0]), (r2, seen[1]))]
        for start in range(0, total, 8):
            await s.send_messages([ServiceBusMessage(str(i)) for i in range(start, start + 8)])
        await asyncio.wait_for(asyncio.gather(*consumers), 30)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(1, total + 1))
    assert seen[0] and seen[1]
