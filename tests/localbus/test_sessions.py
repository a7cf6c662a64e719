"""Sessions on localbus, through the real azure-servicebus SDK (sync here; test_sessions_aio.py for aio).

Each test states the Service Bus behaviour it checks; docs/servicebus-sessions.md has the wire facts and where
they come from.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    OperationTimeoutError,
    ServiceBusError,
    SessionCannotBeLockedError,
    SessionLockLostError,
)
from proton import Message

from localbus import LocalBus
from localbus import connection_string as connection_string_for
from tests.support.ports import free_port

from .child import broker_process
from .rawclient import RawClient
from .sdk import client, sender

SQ = "orders"  # RequiresSession, 1 s locks
LONG = "long-locks"  # RequiresSession, 30 s locks: for tests where a lock must not expire by itself
QUEUES: dict[str, Any] = {SQ: {"RequiresSession": True, "LockDuration": "PT1S", "MaxDeliveryCount": 3},
                          LONG: {"RequiresSession": True, "LockDuration": "PT30S"}, "plain": {}}
TOPICS: dict[str, Any] = {"events": {"Subscriptions": [
    {"Name": "by-customer", "Properties": {"RequiresSession": True}},
    {"Name": "audit"},
]}}


@pytest.fixture
def bus() -> Iterator[LocalBus]:
    with LocalBus(port=0, config_path=None, queues=QUEUES, topics=TOPICS) as running:
        yield running


@pytest.fixture
def sb(bus: LocalBus) -> Iterator[ServiceBusClient]:
    with client(bus) as sb_client:
        yield sb_client


def _send(sb: ServiceBusClient, entity: str, *pairs: tuple[str, str | None]) -> None:
    """Send (body, session id) pairs, one batch."""
    with sender(sb, entity) as s:
        s.send_messages([ServiceBusMessage(body, session_id=sid) for body, sid in pairs])


def _bodies(messages: list[Any]) -> list[str]:
    return [str(m) for m in messages]


# --- sending ----------------------------------------------------------------------------------------------

def test_a_message_without_session_id_is_refused_by_a_session_queue(sb: ServiceBusClient, bus: LocalBus) -> None:
    with sender(sb, SQ) as s, pytest.raises(ServiceBusError) as refused:
        s.send_messages([ServiceBusMessage("has one", session_id="A"), ServiceBusMessage("has none")])
    assert "The SessionId was not set on a message, and it cannot be sent to the entity" in str(refused.value)
    assert "amqp:not-allowed" in str(refused.value)
    assert bus.counts(SQ)["total"] == 0  # the whole batch is refused


def test_a_session_id_longer_than_128_characters_is_refused(sb: ServiceBusClient, bus: LocalBus) -> None:
    _send(sb, SQ, ("longest", "s" * 128))  # the Python SDK itself refuses more; any AMQP client can send it
    with RawClient(bus) as raw:
        raw.authorize(SQ)
        delivery = raw.send_raw(raw.conn.create_sender(SQ), bytes(Message(body="too long", group_id="s" * 129,
                                                                          inferred=True).encode()))
    condition = delivery.remote.condition
    assert delivery.remote_state == delivery.REJECTED and condition is not None
    assert (condition.name, condition.description) == (
        "amqp:invalid-field", "The session id is 129 characters long; Service Bus allows at most 128.")
    assert bus.counts(SQ)["total"] == 1


def test_a_topic_dead_letters_a_message_without_session_id_in_its_session_subscriptions(
        sb: ServiceBusClient) -> None:
    _send(sb, "events", ("no session", None), ("with session", "c1"))
    with sb.get_subscription_receiver("events", "by-customer", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
        [dead] = r.receive_messages(max_wait_time=5)
        r.complete_message(dead)
    assert (str(dead), dead.dead_letter_reason) == ("no session", "Session id is null.")
    assert dead.dead_letter_error_description == ("Session enabled entity doesn't allow a message whose session "
                                                  "identifier is null.")
    with sb.get_subscription_receiver("events", "by-customer", session_id="c1") as r:
        assert _bodies(r.receive_messages(max_wait_time=5)) == ["with session"]
    with sb.get_subscription_receiver("events", "audit") as r:
        assert sorted(_bodies(r.receive_messages(max_message_count=5, max_wait_time=5))) == [
            "no session", "with session"]


def test_receivers_that_do_not_match_the_entity_are_refused(sb: ServiceBusClient) -> None:
    with pytest.raises(ServiceBusError) as plain_on_sessions, sb.get_queue_receiver(SQ) as r:
        r.receive_messages(max_wait_time=1)
    assert "It is not possible for an entity that requires sessions to create a non-sessionful message receiver" \
        in str(plain_on_sessions.value)
    with pytest.raises(ServiceBusError) as session_on_plain, sb.get_queue_receiver("plain", session_id="A") as r:
        r.receive_messages(max_wait_time=1)
    assert "A sessionful message receiver cannot be created on an entity that does not require sessions" \
        in str(session_on_plain.value)


# --- accepting a session ----------------------------------------------------------------------------------

def test_a_named_session_gets_its_own_messages_first_in_first_out(sb: ServiceBusClient) -> None:
    _send(sb, LONG, *[(f"{sid}{i}", sid) for i in range(5) for sid in "AB"])  # interleaved
    with sb.get_queue_receiver(LONG, session_id="B") as r:
        got = r.receive_messages(max_message_count=10, max_wait_time=5)
        assert r.session.session_id == "B" and r.session.locked_until_utc is not None
        for m in got:
            r.complete_message(m)
    assert _bodies(got) == ["B0", "B1", "B2", "B3", "B4"]
    assert [m.session_id for m in got] == ["B"] * 5


def test_next_available_skips_held_sessions_and_says_which_it_got(sb: ServiceBusClient) -> None:
    _send(sb, LONG, ("a", "A"), ("b", "B"))
    with sb.get_queue_receiver(LONG, session_id="A") as held, \
            sb.get_queue_receiver(LONG, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as other:
        got = other.receive_messages(max_wait_time=5)
        assert other.session.session_id == "B" and _bodies(got) == ["b"]
        assert _bodies(held.receive_messages(max_wait_time=5)) == ["a"]


def test_a_held_session_cannot_be_locked_by_a_second_receiver_until_released(sb: ServiceBusClient,
                                                                             bus: LocalBus) -> None:
    _send(sb, LONG, ("a", "A"))
    with sb.get_queue_receiver(LONG, session_id="A") as first:
        with client(bus, retry_total=0) as other, pytest.raises(SessionCannotBeLockedError) as refused, \
                other.get_queue_receiver(LONG, session_id="A") as second:
            second.receive_messages(max_wait_time=1)
        assert "The requested session 'A' cannot be accepted" in str(refused.value)
        assert _bodies(first.receive_messages(max_wait_time=5)) == ["a"]  # not settled: released on close
    with sb.get_queue_receiver(LONG, session_id="A") as again:
        [m] = again.receive_messages(max_wait_time=5)
        again.complete_message(m)
    assert (str(m), m.delivery_count) == ("a", 0)  # closing a session does not count a delivery


def test_next_available_with_no_session_times_out_as_service_bus_does(bus: LocalBus) -> None:
    """Refused once the wait the receiver asked for (com.microsoft:timeout) is over, and not before."""
    began = time.monotonic()
    with client(bus, retry_total=0) as sb, pytest.raises(OperationTimeoutError) as refused, \
            sb.get_queue_receiver(SQ, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=0.5) as r:
        r.receive_messages(max_wait_time=0.5)
    assert time.monotonic() - began >= 0.45  # the SDK asks for its max_wait_time less a few milliseconds
    assert re.search(r"within the allotted timeout of 0\.4\d* s: no session of '\S+' was available", str(refused.value))
    assert bus.call(lambda b: len(b.entity(SQ).waiting)) == 0  # the waiting receiver is gone


def test_next_available_waits_for_a_session_to_arrive(sb: ServiceBusClient, bus: LocalBus) -> None:
    got: list[Any] = []

    def receive() -> None:
        with client(bus) as own, own.get_queue_receiver(LONG, session_id=NEXT_AVAILABLE_SESSION,
                                                        max_wait_time=20) as r:
            got.extend(r.receive_messages(max_wait_time=10))
            got.append(r.session.session_id)
    waiting = threading.Thread(target=receive)
    waiting.start()
    bus.wait_for(lambda b: len(b.entity(LONG).waiting) == 1)
    _send(sb, LONG, ("late", "L"))
    waiting.join(30)
    assert [str(got[0]), got[1]] == ["late", "L"]


# --- locks --------------------------------------------------------------------------------------------------

def test_renewal_keeps_the_session_and_expiry_releases_it_counting_a_delivery(sb: ServiceBusClient,
                                                                               bus: LocalBus) -> None:
    _send(sb, SQ, ("m", "A"))
    with sb.get_queue_receiver(SQ, session_id="A") as r:
        [m] = r.receive_messages(max_wait_time=5)
        for _ in range(3):  # 1 s locks: renewing every half second keeps it for 2 s
            time.sleep(0.5)
            r.session.renew_lock()
        time.sleep(0.5)
        r.complete_message(m)  # still ours
    _send(sb, SQ, ("n", "A"))
    with sb.get_queue_receiver(SQ, session_id="A") as r:
        [n] = r.receive_messages(max_wait_time=5)
        bus.wait_for(lambda b: b.entity(SQ).sessions["A"].holder is None, timeout=10)  # expired, not renewed
        with pytest.raises(SessionLockLostError):
            r.complete_message(n)
    with sb.get_queue_receiver(SQ, session_id="A") as r:  # the session and its message are free again
        [again] = r.receive_messages(max_wait_time=5)
        r.complete_message(again)
    assert (str(again), again.delivery_count) == ("n", 1)


def test_expired_session_locks_count_toward_max_delivery_count(sb: ServiceBusClient, bus: LocalBus) -> None:
    _send(sb, SQ, ("poison", "P"))
    for _ in range(3):  # MaxDeliveryCount 3
        with sb.get_queue_receiver(SQ, session_id="P") as r:
            assert _bodies(r.receive_messages(max_wait_time=5)) == ["poison"]
            bus.wait_for(lambda b: b.entity(SQ).sessions.get("P") is None or b.entity(SQ).sessions["P"].holder is None,
                         timeout=10)
    with sb.get_queue_receiver(SQ, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
        [dead] = r.receive_messages(max_wait_time=5)
    assert (dead.dead_letter_reason, dead.session_id) == ("MaxDeliveryCountExceeded", "P")


# --- settlement inside a session ----------------------------------------------------------------------------

def test_complete_abandon_defer_and_dead_letter_inside_a_session(sb: ServiceBusClient) -> None:
    _send(sb, LONG, *[(f"m{i}", "S") for i in range(4)])
    with sb.get_queue_receiver(LONG, session_id="S") as r:
        m0, m1, m2, m3 = r.receive_messages(max_message_count=4, max_wait_time=5)
        r.abandon_message(m0)
        [again] = r.receive_messages(max_wait_time=5)  # abandoned: served again first
        assert (str(again), again.delivery_count) == ("m0", 1)
        r.complete_message(again)
        r.defer_message(m1)
        r.dead_letter_message(m2, reason="bad", error_description="bad input")
        r.complete_message(m3)
        [deferred] = r.receive_deferred_messages([m1.sequence_number])
        assert (str(deferred), deferred.session_id) == ("m1", "S")
        r.complete_message(deferred)
        assert r.receive_messages(max_wait_time=1) == []
    with sb.get_queue_receiver(LONG, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
        [dead] = r.receive_messages(max_wait_time=5)
        r.complete_message(dead)
    assert (str(dead), dead.session_id, dead.dead_letter_reason) == ("m2", "S", "bad")


def test_receive_and_delete_scheduled_messages_and_peek_by_session(sb: ServiceBusClient) -> None:
    _send(sb, LONG, ("a0", "A"), ("b0", "B"), ("a1", "A"))
    at = datetime_in(seconds=3)
    with sender(sb, LONG) as s:
        [seq] = s.schedule_messages(ServiceBusMessage("a-later", session_id="A"), at)
    with sb.get_queue_receiver(LONG, session_id="A") as r:
        peeked = r.peek_messages(max_message_count=10)
        assert _bodies(peeked) == ["a0", "a1", "a-later"]  # this session only, the scheduled one included
        assert (peeked[-1].sequence_number, peeked[-1].state) == (seq, ServiceBusMessageState.SCHEDULED)
    with sb.get_queue_receiver(LONG, session_id="A", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
        got: list[Any] = []
        while len(got) < 3 and (batch := r.receive_messages(max_message_count=5, max_wait_time=5)):
            got += batch
    assert _bodies(got) == ["a0", "a1", "a-later"]
    assert got[-1].enqueued_time_utc >= at.replace(microsecond=0)  # not before its time
    with sb.get_queue_receiver(LONG, session_id="A") as r:
        assert r.receive_messages(max_wait_time=1) == []  # deleted as they were received


def datetime_in(seconds: float) -> Any:
    import datetime as dt
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


# --- state ------------------------------------------------------------------------------------------------

def test_session_state_is_kept_across_restarts_until_cleared(tmp_path: Path) -> None:
    bus = LocalBus(port=0, config_path=None, queues=QUEUES, data_path=tmp_path)
    with bus, client(bus) as sb, sb.get_queue_receiver(SQ, session_id="A") as r:
        assert r.session.get_state() is None
        r.session.set_state(b"\x00step 3")
    with bus, client(bus) as sb, sb.get_queue_receiver(SQ, session_id="A") as r:  # restarted: from the file
        assert r.session.get_state() == b"\x00step 3"
        r.session.set_state(None)
    with bus, client(bus) as sb, sb.get_queue_receiver(SQ, session_id="A") as r:
        assert r.session.get_state() is None


def test_session_state_needs_the_session_lock(sb: ServiceBusClient, bus: LocalBus) -> None:
    _send(sb, SQ, ("a", "A"))
    with sb.get_queue_receiver(SQ, session_id="A") as r:
        r.receive_messages(max_wait_time=5)
        bus.wait_for(lambda b: b.entity(SQ).sessions["A"].holder is None, timeout=10)  # the lock expired
        with pytest.raises(SessionLockLostError):
            r.session.set_state("late")


# --- concurrency and durability -------------------------------------------------------------------------------

def test_sessions_are_served_concurrently_each_in_order_and_never_by_two_receivers(bus: LocalBus) -> None:
    sessions, per_session = 8, 8
    with client(bus) as sb:
        _send(sb, LONG, *[(f"{s:02d}:{i:02d}", f"s{s:02d}") for i in range(per_session) for s in range(sessions)])
    seen: dict[str, list[str]] = {}
    lock = threading.Lock()
    holders: dict[str, int] = {}

    def worker(name: int) -> None:
        with client(bus, retry_total=0) as sb:  # the SDK retries a session that is not there three times
            while True:
                try:
                    receiver = sb.get_queue_receiver(LONG, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1)
                    receiver.__enter__()
                except OperationTimeoutError:
                    return
                try:
                    sid = receiver.session.session_id
                    with lock:
                        assert sid not in holders, f"{sid} held by {holders[sid]} and {name}"
                        holders[sid] = name
                    while batch := receiver.receive_messages(max_message_count=4, max_wait_time=0.5):
                        for m in batch:
                            receiver.complete_message(m)
                            with lock:
                                seen.setdefault(sid, []).append(str(m))
                    with lock:
                        del holders[sid]
                finally:
                    receiver.__exit__(None, None, None)
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert sorted(seen) == [f"s{s:02d}" for s in range(sessions)]
    for sid, bodies in seen.items():
        assert bodies == [f"{sid[1:]}:{i:02d}" for i in range(per_session)], sid
    assert bus.counts(LONG)["total"] == 0


@pytest.mark.slow
def test_sessions_and_their_state_survive_kill_9(tmp_path: Path) -> None:
    config = tmp_path / "Config.json"
    config.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [
        {"Name": SQ, "Properties": {"RequiresSession": True}}]}]}}))
    port = free_port()
    connection = connection_string_for(port)
    proc = broker_process(port, config, tmp_path / "data")
    try:
        with ServiceBusClient.from_connection_string(connection) as sb:
            with sender(sb, SQ) as s:
                for i in range(20):
                    s.send_messages(ServiceBusMessage(f"{i:02d}", session_id=f"s{i % 3}"))
            with sb.get_queue_receiver(SQ, session_id="s1") as r:
                r.session.set_state("checkpoint")
                held = r.receive_messages(max_message_count=2, max_wait_time=5)  # locked when the broker dies
                assert len(held) == 2
                proc.kill()
                proc.wait(10)
        proc = broker_process(port, config, tmp_path / "data")
        with ServiceBusClient.from_connection_string(connection) as sb:
            for sid in ("s0", "s1", "s2"):
                with sb.get_queue_receiver(SQ, session_id=sid) as r:
                    if sid == "s1":
                        assert r.session.get_state() == b"checkpoint"
                    got = []
                    while batch := r.receive_messages(max_message_count=10, max_wait_time=1):
                        for m in batch:
                            r.complete_message(m)
                        got += _bodies(batch)
                assert got == [f"{i:02d}" for i in range(20) if i % 3 == int(sid[1])], sid
    finally:
        proc.kill()
        proc.wait(10)


def test_the_shipped_config_has_a_session_queue_and_a_session_subscription(localbus: LocalBus) -> None:
    with client(localbus) as sb:
        with sender(sb, "workflow-requests-sessions") as s, pytest.raises(ServiceBusError) as refused:
            s.send_messages(ServiceBusMessage("{}"))
        assert "The SessionId was not set on a message" in str(refused.value)
        _send(sb, "workflow-events", ("no session", None), ("instance 7", "7"))
        with sb.get_subscription_receiver("workflow-events", "sbworker-sessions", session_id="7") as r:
            [m] = r.receive_messages(max_wait_time=5)
            r.complete_message(m)
    assert str(m) == "instance 7"
    # Its rule (sys.SessionId IS NOT NULL) keeps session-less messages out: nothing to dead-letter.
    assert localbus.counts("workflow-events/Subscriptions/sbworker-sessions/$DeadLetterQueue")["total"] == 0
    assert localbus.call(lambda b: b.entity("workflow-events-sbworker-sessions-retry").sessionful)
