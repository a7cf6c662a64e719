"""Issue 12: Service Bus behaviour for any conforming AMQP client, not only the Python SDK.

Protocol cases use a plain proton client (``rawclient``) or raw frames (``rawframes``), which say exactly what
another client stack sends; the rest use the real azure-servicebus SDK. The JavaScript SDK covers the same
ground in tests/interop. Each test here failed before its fix.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient as SyncClient
from azure.servicebus import ServiceBusMessage, ServiceBusMessageState, ServiceBusSubQueue
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError
from proton import Delivery, Message, uint
from proton.utils import BlockingReceiver, LinkDetached

from localbus import LocalBus
from localbus.amqp import MAX_UNREAD_REPLIES
from localbus.config import ConfigError
from tests.fixtures.localbus import LocalBusFactory

from .rawclient import RawClient, sas_token
from .rawframes import CLOSE, DETACH, FLOW, RECEIVER, SENDER, Frame, RawConnection, frame, performative
from .sdk import client, sender

Q = "conformance"
QUEUES: dict[str, Any] = {Q: {"MaxDeliveryCount": 3}}


@pytest.fixture
def bus(localbus_factory: LocalBusFactory) -> LocalBus:
    return localbus_factory(QUEUES, config_path=None)


def _modified(receiver: BlockingReceiver, annotations: dict[str, Any] | None = None) -> None:
    """Settle the next received message the way the JavaScript and .NET SDKs abandon: ``modified`` with
    ``delivery-failed`` unset and the propertiesToModify as the outcome's message annotations."""
    delivery = receiver.fetcher.unsettled.popleft()
    if annotations:
        delivery.local.annotations = annotations
    delivery.update(Delivery.MODIFIED)
    delivery.settle()


# --- abandon counts --------------------------------------------------------------------------------------

def test_modified_without_delivery_failed_counts_a_delivery_and_applies_properties_to_modify(bus: LocalBus) -> None:
    with RawClient(bus) as raw:
        raw.authorize(Q)
        raw.send(raw.conn.create_sender(Q), Message(body="m", properties={"keep": "yes"}))
        receiver = raw.conn.create_receiver(Q, credit=1)
        first = receiver.receive(timeout=5)
        _modified(receiver, {"attempt": "first", "n": 7})
        again = receiver.receive(timeout=5)
    assert (first.delivery_count, again.delivery_count) == (0, 1)
    assert again.properties == {"keep": "yes", "attempt": "first", "n": 7}


def test_a_consumer_that_always_abandons_with_modified_reaches_max_delivery_count(bus: LocalBus) -> None:
    with RawClient(bus) as raw:
        raw.authorize(Q)
        raw.send(raw.conn.create_sender(Q), Message(body="poison"))
        receiver = raw.conn.create_receiver(Q, credit=10)
        counts = []
        for _ in range(3):
            counts.append(receiver.receive(timeout=5).delivery_count)
            _modified(receiver)
    bus.wait_for(lambda b: b.counts(f"{Q}/$DeadLetterQueue")["total"] == 1)
    assert counts == [0, 1, 2]
    with client(bus) as sb, sb.get_queue_receiver(Q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
        [dead] = r.receive_messages(max_wait_time=5)
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


# --- audiences -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("audience", ["conformance/$management", "", "conformance"])
def test_management_works_as_a_connections_first_use_with_any_covering_audience(bus: LocalBus,
                                                                              audience: str) -> None:
    with RawClient(bus) as raw:
        raw.authorize(audience)
        replies = raw.conn.create_receiver(f"{Q}/$management", credit=5, name="replies")
        requests = raw.conn.create_sender(f"{Q}/$management")
        raw.send(requests, Message(id="peek-1", reply_to=f"{Q}/$management", properties={
            "operation": "com.microsoft:peek-message"}, body={"from-sequence-number": 1, "message-count": 1}))
        reply = replies.receive(timeout=5)
    assert reply.properties["statusCode"] == 204  # empty queue: peeked nothing, and was allowed to


def test_a_refused_tokens_reason_reaches_a_client_that_attaches_anyway(bus: LocalBus) -> None:
    with RawClient(bus) as raw:
        uri = f"sb://localhost:{bus.port}/{Q}"
        status, _ = raw.put_token(uri, sas_token(uri, "not-the-key"))
        assert status == 401
        with pytest.raises(LinkDetached) as caught:
            raw.conn.create_sender(Q)
    assert "amqp:unauthorized-access" in str(caught.value)
    assert "the token presented for it was refused: InvalidSignature" in str(caught.value)


# --- message state -----------------------------------------------------------------------------------------

def test_deferred_and_scheduled_messages_report_their_state_and_a_deferred_receive_counts(bus: LocalBus) -> None:
    with client(bus) as sb:
        with sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage("deferred"))
            later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            scheduled_seq = s.schedule_messages(ServiceBusMessage("later"), later)[0]
        with sb.get_queue_receiver(Q) as r:
            [m] = r.receive_messages(max_wait_time=5)
            assert m.state == ServiceBusMessageState.ACTIVE
            r.defer_message(m)
            peeked = {p.sequence_number: p for p in r.peek_messages(max_message_count=5, sequence_number=1)}
            assert peeked[m.sequence_number].state == ServiceBusMessageState.DEFERRED
            assert peeked[scheduled_seq].state == ServiceBusMessageState.SCHEDULED
            [got] = r.receive_deferred_messages([m.sequence_number])
            assert got.state == ServiceBusMessageState.DEFERRED
            assert got.delivery_count == 1  # the first receive counted
            r.complete_message(got)


# --- dead-letter queue, dead-letter source (sessions: test_sessions.py) ---------------------------------------------

def test_sending_to_a_dead_letter_queue_is_refused(bus: LocalBus) -> None:
    with (client(bus, retry_total=0) as sb, pytest.raises(ServiceBusError) as caught,
          sender(sb, f"{Q}/$DeadLetterQueue") as s):
        s.send_messages(ServiceBusMessage("x"))
    assert "dead-letter queue is not allowed" in str(caught.value)
    assert bus.counts(f"{Q}/$DeadLetterQueue")["total"] == 0


def test_dead_letter_source_is_not_set_on_a_dead_letter_that_was_not_forwarded(bus: LocalBus) -> None:
    with client(bus) as sb:
        with sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage("x"))
        with sb.get_queue_receiver(Q) as r:
            [m] = r.receive_messages(max_wait_time=5)
            r.dead_letter_message(m, reason="Bad", error_description="why")
        with sb.get_queue_receiver(Q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
            [dead] = r.receive_messages(max_wait_time=5)
    assert dead.dead_letter_reason == "Bad"
    assert dead.dead_letter_source is None


# --- loose delivery ids and error closes ---------------------------------------------------------------------

def _raw_management(bus: LocalBus) -> RawConnection:
    raw = RawConnection(bus.port)
    raw.handshake()
    raw.attach(0, "cbs", SENDER, "$cbs")
    uri = f"sb://localhost:{bus.port}"
    raw.put_token(0, uri, sas_token(uri, bus.key), delivery_id=0)
    raw.attach(1, "replies", RECEIVER, f"{Q}/$management")
    raw.attach(2, "requests", SENDER, f"{Q}/$management")
    return raw


def test_repeated_and_skipped_delivery_ids_do_not_close_the_connection(bus: LocalBus) -> None:
    """What the aio SDK sends when AutoLockRenewer renews several locks at once: ids 1, 1, then 3."""
    raw = _raw_management(bus)
    try:
        raw.send(frame(performative(FLOW, uint(0), uint(100000), uint(0), uint(100000), uint(1), uint(0),
                                    uint(10))))
        for n, delivery_id in enumerate([1, 1, 3]):
            request = Message(id=f"peek-{n}", reply_to="replies", properties={
                "operation": "com.microsoft:peek-message"}, body={"from-sequence-number": 1, "message-count": 1})
            raw.transfer(2, delivery_id, bytes(request.encode()))
        replies: list[Frame] = []
        while len(replies) < 3:
            received = raw.read_frame()
            assert received.code != CLOSE, received
            if received.code == 0x14:
                replies.append(received)
    finally:
        raw.close()


async def test_concurrent_auto_lock_renewals_keep_the_connection_and_every_lock(
        localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({"renewed": {"LockDuration": "PT3S"}}, config_path=None)
    failures: list[str] = []

    async def failed(renewable: Any, error: Exception | None) -> None:
        failures.append(repr(error))

    async with ServiceBusClient.from_connection_string(bus.connection_string) as sb:
        async with sb.get_queue_sender("renewed") as s:
            await s.send_messages([ServiceBusMessage(str(i)) for i in range(12)])
        async with sb.get_queue_receiver("renewed", prefetch_count=12) as r:
            held = []
            while len(held) < 12:
                held += await r.receive_messages(max_message_count=12, max_wait_time=1)
            renewer = AutoLockRenewer(on_lock_renew_failure=failed)
            for m in held:
                renewer.register(r, m, max_lock_renewal_duration=60)
            await bus_wait_for_renewals(bus, held, r)
            for m in held:
                await r.complete_message(m)
            await renewer.close()
    assert failures == []
    assert bus.counts("renewed")["total"] == 0


async def bus_wait_for_renewals(bus: LocalBus, held: list[Any], receiver: Any) -> None:
    """Hold until every lock was renewed at least twice (so renewals overlapped), however long that takes."""
    first = {m.sequence_number: m.locked_until_utc for m in held}
    for _ in range(600):
        await asyncio.sleep(0.1)
        if all(m.locked_until_utc > first[m.sequence_number] for m in held):
            break
    renewed = {m.sequence_number: m.locked_until_utc for m in held}
    for _ in range(600):
        await asyncio.sleep(0.1)
        if all(m.locked_until_utc > renewed[m.sequence_number] for m in held):
            return


def test_an_error_close_carries_an_info_map(bus: LocalBus) -> None:
    """The Python SDK indexes the error's info field; without it, it crashes with IndexError in _incoming_close."""
    raw = _raw_management(bus)
    try:
        request = bytes(Message(id="peek", reply_to="replies", properties={
            "operation": "com.microsoft:peek-message"}, body={"from-sequence-number": 1, "message-count": 1}
        ).encode())
        for delivery_id in range(1, MAX_UNREAD_REPLIES + 10):
            raw.transfer(2, delivery_id, request)
        frames = raw.read_until_closed()
    finally:
        raw.close()
    [close] = [f for f in frames if f.code == CLOSE]
    error = close.fields[0].value
    assert str(error[0]) == "amqp:resource-limit-exceeded"
    assert len(error) == 3 and error[2]


def test_a_refused_attach_detaches_with_an_info_map(bus: LocalBus) -> None:
    raw = RawConnection(bus.port)
    try:
        raw.handshake()
        raw.attach(0, "nobody", SENDER, Q)  # no token at all
        detach = raw.expect(DETACH)
    finally:
        raw.close()
    error = detach.fields[2].value
    assert str(error[0]) == "amqp:unauthorized-access" and len(error) == 3 and error[2]


def test_sdk_token_refusal_is_described(bus: LocalBus) -> None:
    bad = bus.connection_string.replace(bus.key, "wrong-key")
    with (SyncClient.from_connection_string(bad, retry_total=0) as sb, pytest.raises(ServiceBusError) as caught,
          sb.get_queue_sender(Q) as s):
        s.send_messages(ServiceBusMessage("x"))
    assert "InvalidSignature" in str(caught.value.inner_exception)


def test_unsupported_rule_is_a_one_line_startup_error() -> None:
    topics = {"t": {"Subscriptions": [{"Name": "s", "Rules": [{"Name": "math", "Properties": {
        "FilterType": "Sql", "SqlFilter": {"SqlExpression": "price * 2 > 10"}}}]}]}}
    with pytest.raises(ConfigError) as caught:
        LocalBus(port=0, config_path=None, topics=topics)
    assert "unsupported rule 'math'" in str(caught.value) and "\n" not in str(caught.value)

