"""End to end with the real (sync) azure-servicebus SDK over real sockets: each Service Bus semantic."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
)

from localbus import LocalBus
from tests.fixtures.localbus import SHORT_LOCK_QUEUE, LocalBusFactory

from .sdk import FakeCredential, bodies, client, sender

Q = "workflow-requests"
DL = ServiceBusSubQueue.DEAD_LETTER


def test_send_single_and_batch_then_peek_lock_receive(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        with sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage("one", message_id="id-1", subject="greeting",
                                              application_properties={"kind": "start", "n": 7}))
            s.send_messages([ServiceBusMessage("two"), ServiceBusMessage("three")])
            batch = s.create_message_batch()
            for body in ("four", "five"):
                batch.add_message(ServiceBusMessage(body))
            s.send_messages(batch)
            with pytest.raises(MessageSizeExceededError):  # the Standard tier / emulator limit: 256 KiB
                s.send_messages(ServiceBusMessage("x" * 300_000))
        assert localbus.counts(Q)["active"] == 5
        with sb.get_queue_receiver(Q) as r:
            got = r.receive_messages(max_message_count=5, max_wait_time=5)
            assert bodies(got) == ["one", "two", "three", "four", "five"]
            assert [m.sequence_number for m in got] == [1, 2, 3, 4, 5]
            first = got[0]
            assert first.message_id == "id-1" and first.subject == "greeting"
            assert first.application_properties == {b"kind": b"start", b"n": 7}
            assert all(m.delivery_count == 0 for m in got)
            assert all(m.lock_token is not None for m in got)
            now = dt.datetime.now(dt.UTC)
            assert first.enqueued_time_utc is not None and abs(first.enqueued_time_utc - now).total_seconds() < 30
            assert first.locked_until_utc is not None and first.locked_until_utc > now + dt.timedelta(seconds=50)
            assert localbus.counts(Q) == {"active": 0, "locked": 5, "deferred": 0, "scheduled": 0, "total": 5}
            for m in got:
                r.complete_message(m)
        assert localbus.counts(Q)["total"] == 0


def test_receive_and_delete_removes_on_delivery(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        with sender(sb, Q) as s:
            s.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
        with sb.get_queue_receiver(Q, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            got = r.receive_messages(max_message_count=2, max_wait_time=5)
            assert bodies(got) == ["a", "b"]
            assert localbus.counts(Q)["total"] == 0


def test_abandon_dead_letter_defer_and_receive_deferred(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        with sender(sb, Q) as s:
            s.send_messages([ServiceBusMessage(b) for b in ("abandon", "dead", "defer")])
        with sb.get_queue_receiver(Q) as r:
            abandon, dead, defer = r.receive_messages(max_message_count=3, max_wait_time=5)
            r.abandon_message(abandon)
            r.dead_letter_message(dead, reason="BadInput", error_description="field x missing")
            r.defer_message(defer)
            again = r.receive_messages(max_message_count=1, max_wait_time=5)
            assert bodies(again) == ["abandon"] and again[0].delivery_count == 1
            r.complete_message(again[0])
            assert localbus.counts(Q)["deferred"] == 1
            [deferred] = r.receive_deferred_messages([defer.sequence_number])
            assert str(deferred) == "defer" and deferred.lock_token is not None
            r.complete_message(deferred)
        assert localbus.counts(Q)["total"] == 0
        with sb.get_queue_receiver(Q, sub_queue=DL) as dlq:
            [m] = dlq.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(m) == "dead"
            assert m.dead_letter_reason == "BadInput"
            assert m.dead_letter_error_description == "field x missing"
            assert m.sequence_number == dead.sequence_number
            dlq.complete_message(m)


def test_lock_expiry_redelivers_and_max_delivery_count_dead_letters(localbus: LocalBus) -> None:
    """short-lock: 1 s locks, MaxDeliveryCount 3. Let the lock lapse twice, abandon once → dead-lettered."""
    with client(localbus) as sb:
        with sender(sb, SHORT_LOCK_QUEUE) as s:
            s.send_messages(ServiceBusMessage("slow"))
        with sb.get_queue_receiver(SHORT_LOCK_QUEUE) as r:
            [first] = r.receive_messages(max_message_count=1, max_wait_time=5)
            started = time.monotonic()
            [second] = r.receive_messages(max_message_count=1, max_wait_time=5)  # arrives when the lock lapses
            assert time.monotonic() - started > 0.5
            assert (first.delivery_count, second.delivery_count) == (0, 1)
            assert second.sequence_number == first.sequence_number
            with pytest.raises(MessageLockLostError):
                r.complete_message(first)
            [third] = r.receive_messages(max_message_count=1, max_wait_time=5)
            assert third.delivery_count == 2
            r.abandon_message(third)
        assert localbus.counts(SHORT_LOCK_QUEUE)["total"] == 0
        with sb.get_queue_receiver(SHORT_LOCK_QUEUE, sub_queue=DL) as dlq:
            [dead] = dlq.peek_messages(max_message_count=1, sequence_number=1)
            assert str(dead) == "slow"
            assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert dead.delivery_count == 3


def test_renew_lock_keeps_message_locked(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        with sender(sb, SHORT_LOCK_QUEUE) as s:
            s.send_messages(ServiceBusMessage("renew me"))
        with sb.get_queue_receiver(SHORT_LOCK_QUEUE) as r:
            [m] = r.receive_messages(max_message_count=1, max_wait_time=5)
            first_until = m.locked_until_utc
            deadline = time.monotonic() + 1.7
            while time.monotonic() < deadline:  # renew every ~0.4 s for 1.7 lock durations
                assert r.receive_messages(max_message_count=1, max_wait_time=0.4) == []
                new_until = r.renew_message_lock(m)
            assert first_until is not None and new_until > first_until + dt.timedelta(seconds=1)
            assert localbus.counts(SHORT_LOCK_QUEUE)["locked"] == 1
            r.complete_message(m)
        assert localbus.counts(SHORT_LOCK_QUEUE)["total"] == 0


def test_scheduled_messages_and_cancel(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        with sender(sb, Q) as s:
            [kept] = s.schedule_messages(ServiceBusMessage("scheduled"), when)
            [cancelled] = s.schedule_messages(ServiceBusMessage("cancelled"), when)
            s.send_messages(ServiceBusMessage("via send", scheduled_enqueue_time_utc=when))
            s.cancel_scheduled_messages(cancelled)
        assert localbus.counts(Q) == {"active": 0, "locked": 0, "deferred": 0, "scheduled": 2, "total": 2}
        with sb.get_queue_receiver(Q) as r:
            got = r.receive_messages(max_message_count=2, max_wait_time=8)
            got += r.receive_messages(max_message_count=2 - len(got), max_wait_time=5) if len(got) < 2 else []
            assert sorted(bodies(got)) == ["scheduled", "via send"]
            assert dt.datetime.now(dt.UTC) >= when - dt.timedelta(milliseconds=50)
            assert kept in [m.sequence_number for m in got]
            for m in got:
                r.complete_message(m)


def test_peek_does_not_lock_or_remove(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        with sender(sb, Q) as s:
            s.send_messages([ServiceBusMessage(f"p{i}") for i in range(3)])
        with sb.get_queue_receiver(Q) as r:
            peeked = r.peek_messages(max_message_count=10, sequence_number=1)
            assert bodies(peeked) == ["p0", "p1", "p2"]
            assert [m.sequence_number for m in peeked] == [1, 2, 3]
            assert bodies(r.peek_messages(max_message_count=1, sequence_number=2)) == ["p1"]
            assert localbus.counts(Q)["active"] == 3
            got = r.receive_messages(max_message_count=3, max_wait_time=5)
            assert bodies(got) == ["p0", "p1", "p2"]


def test_message_ttl_expiry_dead_letters_when_configured(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({"expiring": {"DefaultMessageTimeToLive": "PT1S", "DeadLetteringOnMessageExpiration": True}})
    with client(bus) as sb:
        with sender(sb, "expiring") as s:
            s.send_messages(ServiceBusMessage("old"))
            s.send_messages(ServiceBusMessage("older", time_to_live=dt.timedelta(milliseconds=300)))
        assert bus.counts("expiring")["active"] == 2
        with sb.get_queue_receiver("expiring", sub_queue=DL) as dlq:
            got = dlq.receive_messages(max_message_count=2, max_wait_time=5)  # they arrive as they expire
            got += dlq.receive_messages(max_message_count=1, max_wait_time=5) if len(got) < 2 else []
            assert bodies(got) == ["old", "older"] or bodies(got) == ["older", "old"]
            assert {m.dead_letter_reason for m in got} == {"TTLExpiredException"}
        assert bus.counts("expiring")["total"] == 0


def test_duplicate_detection_by_message_id(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({"dedup": {"RequiresDuplicateDetection": True,
                                      "DuplicateDetectionHistoryTimeWindow": "PT1M"}})
    with client(bus) as sb, sender(sb, "dedup") as s:
        s.send_messages(ServiceBusMessage("first", message_id="order-1"))
        s.send_messages(ServiceBusMessage("again", message_id="order-1"))
        s.send_messages([ServiceBusMessage("other", message_id="order-2"),
                         ServiceBusMessage("batch dup", message_id="order-2")])
        with sb.get_queue_receiver("dedup") as r:
            assert bodies(r.peek_messages(max_message_count=10, sequence_number=1)) == ["first", "other"]


def test_release_on_close_keeps_delivery_count(localbus: LocalBus) -> None:
    """A prefetching receiver releases its unused buffer on close: back at once, count unchanged."""
    with client(localbus) as sb:
        with sender(sb, Q) as s:
            s.send_messages([ServiceBusMessage(f"r{i}") for i in range(3)])
        with sb.get_queue_receiver(Q, prefetch_count=10) as r:
            [m] = r.receive_messages(max_message_count=1, max_wait_time=5)
            r.complete_message(m)
            localbus.wait_for(lambda b: b.counts(Q)["locked"] == 2, 5)  # the rest sit in the prefetch buffer
        # Released (the close returns as the frames leave; localbus applies them a moment later), not waiting
        # for a 60 s lock to lapse.
        localbus.wait_for(lambda b: b.counts(Q)["active"] == 2, 5)
        with sb.get_queue_receiver(Q) as r2:
            got = r2.receive_messages(max_message_count=2, max_wait_time=5)
            assert bodies(got) == ["r1", "r2"]
            assert [m.delivery_count for m in got] == [0, 0]


def test_unknown_queue_is_entity_not_found(localbus: LocalBus) -> None:
    with client(localbus, retry_total=0) as sb:
        with pytest.raises(MessagingEntityNotFoundError), sender(sb, "no-such-queue") as s:
            s.send_messages(ServiceBusMessage("x"))
        with pytest.raises(MessagingEntityNotFoundError), sb.get_queue_receiver("no-such-queue") as r:
            r.receive_messages(max_wait_time=1)


def test_wrong_sas_key_is_refused(localbus: LocalBus) -> None:
    wrong = localbus.connection_string.replace("SAS_KEY_VALUE", "not-the-key")
    sb = ServiceBusClient.from_connection_string(wrong, retry_total=0)
    with sb, pytest.raises(ServiceBusAuthenticationError), sender(sb, Q) as s:
        s.send_messages(ServiceBusMessage("x"))
    assert localbus.counts(Q)["total"] == 0
    token_type, token = localbus.last_token(Q) or ("", "")
    assert token.startswith("SharedAccessSignature ") and "skn=RootManageSharedAccessKey" in token
    assert token_type in ("jwt", "servicebus.windows.net:sastoken")  # SDK 7.15 labels SAS tokens "jwt"


def test_jwt_credential_is_accepted_and_inspectable(localbus_factory: LocalBusFactory) -> None:
    localbus = localbus_factory(accept_jwt=True)  # unverifiable tokens are refused unless the operator opts in
    credential = FakeCredential()
    with ServiceBusClient(localbus.endpoint, credential, use_tls=False) as sb:  # type: ignore[arg-type]
        with sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage("with entra id"))
        with sb.get_queue_receiver(Q, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            assert bodies(r.receive_messages(max_message_count=1, max_wait_time=5)) == ["with entra id"]
    audience = f"sb://localhost:{localbus.port}/{Q}"
    assert localbus.last_token(audience) == ("jwt", f"fake-jwt-{len(credential.scopes)}")
    assert ("jwt", audience) in localbus.tokens
    assert credential.scopes and "servicebus.azure.net" in credential.scopes[0][0]
