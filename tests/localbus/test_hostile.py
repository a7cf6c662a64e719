"""Hostile and careless clients: unsupported property types, token abuse, credit abuse, idle and half-open sockets.

Protocol cases use a plain proton client (``rawclient``) or raw frames (``rawframes``); the rest use the real
azure-servicebus SDK. Every test here failed against localbus before its fix, except the two marked as guarding
behaviour that already held.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureSasCredential
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus.exceptions import ServiceBusAuthenticationError, ServiceBusError
from proton import Condition, ConnectionException, Delivery, Endpoint, Message, decimal32, symbol
from proton.utils import BlockingConnection, LinkDetached

from localbus import LocalBus, codec
from localbus.amqp import MAX_UNREAD_REPLIES
from localbus.broker import Broker, MoveFailed
from localbus.config import queue_settings
from localbus.server import ExposureError
from localbus.store import ACTIVE, SqlitePersistence
from tests.fixtures.localbus import SHORT_LOCK_QUEUE, LocalBusFactory

from .rawclient import RawClient, sas_token
from .rawframes import CLOSE, DETACH, FLOW, RECEIVER, SASL_HEADER, SENDER, Frame, RawConnection, transfer_frame
from .sdk import FakeCredential, client, sender

Q = "workflow-requests"


# --- 1. application properties Service Bus would not store -------------------------------------------------

def _app_props(entries: bytes, count: int) -> bytes:
    """An application-properties section (map32) from raw encoded entries."""
    return b"\x00\x53\x74\xd1" + struct.pack(">II", len(entries) + 4, count) + entries


DOUBLE_KEY = b"\x82" + struct.pack(">d", 1.5) + codec.enc_string("v")  # key 1.5 (double) -> "v"
GARBAGE_VALUE = codec.enc_string("k") + b"\xee\x00"  # a type code that does not exist


def _blob(app_entries: bytes) -> bytes:
    """An encoded message with the given raw application-property entries (one pair) and a data body."""
    body = bytes(Message(body=b"payload", inferred=True).encode())  # type: ignore[arg-type]
    return _app_props(app_entries, 2) + body


def test_non_string_property_key_is_refused_at_send_and_the_sdk_shows_why(localbus: LocalBus) -> None:
    with client(localbus, retry_total=0) as sb, sender(sb, Q) as s:
        with pytest.raises(ServiceBusError) as caught:
            s.send_messages(ServiceBusMessage("x", application_properties={1.5: "v"}))  # type: ignore[dict-item]
        s.send_messages(ServiceBusMessage("fine", application_properties={"k": 1.5}))  # the link still works
    assert "application property keys must be strings" in str(caught.value)
    assert localbus.counts(Q)["total"] == 1


def test_double_property_key_is_rejected_as_invalid_field(localbus: LocalBus) -> None:
    with RawClient(localbus) as raw:
        raw.authorize(Q)
        delivery = raw.send_raw(raw.conn.create_sender(Q), _blob(DOUBLE_KEY))
    condition = delivery.remote.condition
    assert delivery.remote_state == delivery.REJECTED and condition is not None
    assert condition.name == "amqp:invalid-field"
    assert condition.description == ("Application property key 1.5 is of type double; "
                                     "application property keys must be strings.")
    assert localbus.counts(Q)["total"] == 0


@pytest.mark.parametrize(("value", "type_name"), [(decimal32(7), "decimal32"), (symbol("s"), "symbol"),
                                                  ([1, 2], "list"), ({"a": 1}, "map")])
def test_unsupported_property_value_is_rejected_as_invalid_field(localbus: LocalBus, value: object,
                                                                 type_name: str) -> None:
    with RawClient(localbus) as raw:
        raw.authorize(Q)
        s = raw.conn.create_sender(Q)
        delivery = raw.send(s, Message(body=b"x", properties={"bad": value}))
        ok = raw.send(s, Message(body=b"x", properties={"good": 1.5, "when": "now"}))
    assert delivery.remote_state == delivery.REJECTED
    condition = delivery.remote.condition
    assert condition is not None and condition.name == "amqp:invalid-field"
    assert f"unsupported type {type_name} of application property 'bad'" in str(condition.description)
    assert ok.remote_state == ok.ACCEPTED
    assert localbus.counts(Q)["total"] == 1


def _old_row(data: Path, queue: str, blob: bytes, *, expired: bool) -> None:
    """Write a message as an older localbus (which accepted anything) left it in SQLite."""
    store = SqlitePersistence(data)
    now = int(time.time() * 1000)
    store.insert(queue.lower(), 1, ACTIVE, 0, now - 60_000, now - 30_000 if expired else None, blob)
    store.set_last_sequence(queue.lower(), 1)
    store.close()


def _rows(data: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(data / "localbus.sqlite3") as db:
        return list(db.execute("SELECT entity, seq FROM messages ORDER BY entity"))


def test_expiry_of_a_stored_double_key_message_dead_letters_it_and_the_loop_survives(
        localbus_factory: LocalBusFactory, tmp_path: Path) -> None:
    _old_row(tmp_path, "ttl", _blob(DOUBLE_KEY), expired=True)
    bus = localbus_factory({"ttl": {"DeadLetteringOnMessageExpiration": True}}, data_path=tmp_path)
    bus.wait_for(lambda b: b.counts("ttl/$DeadLetterQueue")["total"] == 1)
    assert bus.running
    bus.stop()
    assert _rows(tmp_path) == [("ttl/$deadletterqueue", 1)]


def test_expiry_that_cannot_encode_leaves_the_message_in_place_and_the_loop_running(
        localbus_factory: LocalBusFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _old_row(tmp_path, "ttl", _blob(GARBAGE_VALUE), expired=True)
    bus = localbus_factory({"ttl": {"DeadLetteringOnMessageExpiration": True}}, data_path=tmp_path)
    bus.wait_for(lambda b: b.entities["ttl"].records[1].stuck)
    with client(bus) as sb, sender(sb, "ttl") as s:  # still serving
        s.send_messages(ServiceBusMessage("after"))
    assert bus.running and bus.counts("ttl")["total"] == 2
    assert sum("stays where it is" in r.getMessage() for r in caplog.records) == 1  # logged once, not per try
    bus.stop()
    bus.start()
    assert bus.counts("ttl")["total"] == 2 and bus.counts("ttl/$DeadLetterQueue")["total"] == 0


def test_client_dead_letter_of_a_stored_double_key_message_moves_it(localbus_factory: LocalBusFactory,
                                                                    tmp_path: Path) -> None:
    _old_row(tmp_path, Q, _blob(DOUBLE_KEY), expired=False)
    bus = localbus_factory(data_path=tmp_path)
    with client(bus) as sb, sb.get_queue_receiver(Q) as r:
        [m] = r.receive_messages(max_message_count=1, max_wait_time=5)
        r.dead_letter_message(m, reason="bad", error_description="bad props")
    with client(bus) as sb, sb.get_queue_receiver(Q, sub_queue="deadletter",
                                                   receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
        [dead] = r.receive_messages(max_message_count=1, max_wait_time=5)
    assert dead.dead_letter_reason == "bad" and bus.counts(Q)["total"] == 0


def test_a_failed_dead_letter_keeps_the_message_locked_where_it_was(tmp_path: Path) -> None:
    store = SqlitePersistence(tmp_path)
    broker = Broker({"q": queue_settings({"LockDuration": "PT30S"})}, store)
    q = broker.entity("q")
    assert q is not None
    broker.enqueue(q, codec.parse_message(_blob(GARBAGE_VALUE)))  # as an old version stored it
    store.commit()
    taken = broker.take(q, peek_lock=True)
    assert taken is not None and taken[1] is not None
    with pytest.raises(MoveFailed):
        broker.dead_letter(taken[1], "reason", "description")
    store.commit()
    assert broker.counts("q")["locked"] == 1 and broker.counts("q/$DeadLetterQueue")["total"] == 0
    broker.complete(taken[1])  # the lock still works
    store.close()


# --- 3. tokens: audience, namespace, expiry, jwt opt-in, SASL ------------------------------------------------

def _auth_failure_text(error: ServiceBusAuthenticationError) -> str:
    """What SDK 7.15 shows of a refused put-token: its message is generic ("amqp:client-error"); the
    broker's status description is in the inner exception (``CBS Token authentication failed ... Description:``).
    """
    return f"{error} / {error.inner_exception}"


def test_jwt_is_refused_by_default_and_the_sdk_says_how_to_enable_it(localbus: LocalBus) -> None:
    sb = ServiceBusClient(localbus.endpoint, FakeCredential(), use_tls=False, retry_total=0)  # type: ignore[arg-type]
    with sb, pytest.raises(ServiceBusAuthenticationError) as caught, sb.get_queue_receiver(
            Q, sub_queue="deadletter") as r:
        r.receive_messages(max_wait_time=1)
    shown = _auth_failure_text(caught.value)
    assert "--accept-jwt" in shown and "accept_jwt=True" in shown


def test_any_jwt_reads_nothing_without_opt_in(localbus: LocalBus) -> None:
    with RawClient(localbus) as raw:
        status, description = raw.put_token(f"sb://localhost:{localbus.port}/{Q}", "anything", "jwt")
        assert status == 401 and "--accept-jwt" in description
        with pytest.raises(LinkDetached) as caught:
            raw.conn.create_receiver(f"{Q}/$DeadLetterQueue")
    assert "amqp:unauthorized-access" in str(caught.value)


def test_correctly_signed_token_for_another_namespace_is_refused(localbus: LocalBus) -> None:
    foreign = f"sb://other.servicebus.windows.net/{Q}"
    token = sas_token(foreign, localbus.key)  # the right key: only the namespace is wrong
    sb = ServiceBusClient(localbus.endpoint, AzureSasCredential(token), use_tls=False, retry_total=0)
    with sb, pytest.raises(ServiceBusAuthenticationError) as caught, sender(sb, Q) as s:
        s.send_messages(ServiceBusMessage("x"))
    assert "is not this namespace" in _auth_failure_text(caught.value)
    with RawClient(localbus) as raw:  # nor may a client name the foreign namespace as its audience
        assert raw.put_token(foreign, token)[0] == 401
    assert localbus.counts(Q)["total"] == 0


def test_wrong_signature_is_refused_with_a_reason_the_sdk_shows(localbus: LocalBus) -> None:
    """Already held before; kept next to the namespace check it resembles."""
    uri = f"sb://localhost:{localbus.port}/{Q}"
    sb = ServiceBusClient(localbus.endpoint, AzureSasCredential(sas_token(uri, "not-the-key")), use_tls=False,
                          retry_total=0)
    with sb, pytest.raises(ServiceBusAuthenticationError) as caught, sender(sb, Q) as s:
        s.send_messages(ServiceBusMessage("x"))
    assert "InvalidSignature: the token has an invalid signature" in _auth_failure_text(caught.value)


def test_queue_token_covers_the_queue_its_management_and_its_dlq_only(localbus: LocalBus) -> None:
    with RawClient(localbus) as raw:
        raw.authorize(Q)
        raw.conn.create_sender(Q)
        raw.conn.create_receiver(f"{Q}/$DeadLetterQueue")
        raw.conn.create_sender(f"{Q}/$management")
        with pytest.raises(LinkDetached):
            raw.conn.create_sender(SHORT_LOCK_QUEUE)
    with RawClient(localbus) as raw:
        raw.authorize(f"{Q}/$management")
        raw.conn.create_sender(f"{Q}/$management")
        with pytest.raises(LinkDetached):
            raw.conn.create_sender(Q)


def _wait_detached(raw: RawClient, link: Any) -> Condition:
    with contextlib.suppress(LinkDetached):  # proton's blocking API raises it from any wait once it happens
        raw.conn.wait(lambda: bool(link.state & Endpoint.REMOTE_CLOSED), timeout=10, msg="server detach")
    condition: Condition = link.remote_condition
    return condition


class Clock:
    """Epoch seconds that move only when the test moves them (the broker's token clock, `TokenAuthority.clock`)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_link_is_detached_when_its_token_expires_unless_renewed(localbus: LocalBus,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The token lapses when the test says, after every step that needs it valid: with the wall clock and a 2 s
    # token (1 s after int() rounding), a slow machine let it lapse before the renewal and the send.
    clock = Clock()
    monkeypatch.setattr(localbus.auth, "clock", clock)
    uri = f"sb://localhost:{localbus.port}/{Q}"
    expiry = int(clock.now) + 60
    with RawClient(localbus) as lapsing, RawClient(localbus) as renewing:
        assert lapsing.put_token(uri, sas_token(uri, localbus.key, expiry=expiry))[0] == 202
        assert renewing.put_token(uri, sas_token(uri, localbus.key, expiry=expiry))[0] == 202
        doomed, kept = lapsing.conn.create_sender(Q), renewing.conn.create_sender(Q)
        assert lapsing.send(doomed, Message(body=b"before")).remote_state == Delivery.ACCEPTED
        assert renewing.put_token(uri, sas_token(uri, localbus.key, expiry=expiry + 3600))[0] == 202  # renewal
        clock.now = expiry + 1
        condition = _wait_detached(lapsing, doomed.link)
        assert condition.name == "amqp:unauthorized-access" and "expired" in str(condition.description)
        with pytest.raises(LinkDetached):  # and nothing new is allowed with the stale token
            lapsing.conn.create_sender(Q, name="second")
        assert renewing.send(kept, Message(body=b"after")).remote_state == Delivery.ACCEPTED
    assert localbus.counts(Q)["total"] == 2


def test_client_that_skips_sasl_is_refused(localbus: LocalBus) -> None:
    with pytest.raises(ConnectionException):
        BlockingConnection(f"amqp://127.0.0.1:{localbus.port}", timeout=5, sasl_enabled=False)


def test_jwt_is_accepted_when_the_operator_opts_in(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory(accept_jwt=True)
    with RawClient(bus) as raw:
        assert raw.put_token(f"sb://localhost:{bus.port}/{Q}", "anything", "jwt")[0] == 202
        assert raw.send(raw.conn.create_sender(Q), Message(body=b"x")).remote_state == Delivery.ACCEPTED


# --- 2. resource abuse: unread replies, credit, idle and half-open connections ------------------------------

def _authorized_raw(bus: LocalBus, timeout: float = 10.0) -> RawConnection:
    """A frame-level connection with a put-token for the namespace already sent on handle 0 (delivery 0)."""
    raw = RawConnection(bus.port, timeout=timeout)
    raw.handshake()
    raw.attach(0, "cbs-sender", SENDER, "$cbs")
    uri = f"sb://localhost:{bus.port}"
    raw.put_token(0, uri, sas_token(uri, bus.key))
    return raw


def _close_condition(frames: list[Frame]) -> str | None:
    for received in frames:
        if received.code == CLOSE and received.fields and received.fields[0] is not None:
            return str(received.fields[0].value[0])
    return None


def test_a_client_that_never_reads_management_replies_is_cut_off(localbus: LocalBus) -> None:
    raw = _authorized_raw(localbus)
    try:
        raw.attach(1, "mgmt-replies", RECEIVER, f"{Q}/$management")  # and never any credit
        raw.attach(2, "mgmt-requests", SENDER, f"{Q}/$management")
        request = bytes(Message(id="peek", reply_to="mgmt-replies", properties={
            "operation": "com.microsoft:peek-message"}, body={"from-sequence-number": 1, "message-count": 1}
        ).encode())
        for delivery_id in range(1, MAX_UNREAD_REPLIES + 50):
            raw.transfer(2, delivery_id, request)
        frames = raw.read_until_closed()  # localbus closes, then drops the socket of a client that lingers
    finally:
        raw.close()
    assert _close_condition(frames) == "amqp:resource-limit-exceeded"
    assert localbus.running
    localbus.wait_for_connections(at_most=0)


def test_transfers_beyond_link_credit_detach_the_link_and_are_not_stored(localbus_factory: LocalBusFactory) -> None:
    # A small credit, so that the whole excess arrives in one read: transfers localbus reads only after it sent
    # more credit are within credit as far as any server can tell (the client may have seen that flow).
    localbus = localbus_factory(link_credit=20)
    raw = _authorized_raw(localbus)
    try:
        raw.attach(1, "greedy", SENDER, Q)
        credit = int(raw.expect(FLOW).fields[6])
        message = bytes(Message(body=b"m", inferred=True).encode())  # type: ignore[arg-type]
        # Twice the credit in one write, never waiting for (or reading) more credit.
        raw.send(b"".join(transfer_frame(1, delivery_id, message) for delivery_id in range(1, 2 * credit + 1)))
        detach = raw.expect(DETACH)
    finally:
        raw.close()
    assert str(detach.fields[2].value[0]) == "amqp:link:transfer-limit-exceeded"
    # Stored: exactly what the granted credit allowed (flows the client ignored count as granted), no more.
    flows = [f for f in raw.frames if f.code == FLOW and f.fields[4] == 1]
    limit = max(int(f.fields[5]) + int(f.fields[6]) for f in flows)
    assert credit <= limit < 2 * credit
    assert localbus.counts(Q)["total"] == limit


def _flood(raw: RawConnection, data: bytes) -> None:
    with contextlib.suppress(OSError):  # localbus may drop us before the last byte: that is the point
        raw.send(data)


def test_a_client_flooding_its_link_ignoring_credit_is_detached_and_others_are_served(localbus: LocalBus) -> None:
    # The finding: 20,000 unsettled transfers sent without waiting for credit were all stored, because credit
    # granted while localbus worked through the backlog counted as if the client had seen it.
    raw = _authorized_raw(localbus)
    try:
        raw.attach(1, "flood", SENDER, Q)
        credit = int(raw.expect(FLOW).fields[6])
        message = bytes(Message(body=b"flood", inferred=True).encode())  # type: ignore[arg-type]
        writer = threading.Thread(target=_flood, args=(raw, b"".join(
            transfer_frame(1, delivery_id, message) for delivery_id in range(1, 20_001))))
        writer.start()
        detach = raw.expect(DETACH)
        with client(localbus) as sb:  # while the flood is still being read, a polite client is served
            with sender(sb, Q) as s:
                s.send_messages(ServiceBusMessage("polite"))
            received: list[Any] = []
            with sb.get_queue_receiver(Q) as r:
                while batch := r.receive_messages(max_message_count=100, max_wait_time=2):
                    for m in batch:
                        r.complete_message(m)
                    received += batch
        writer.join(30)
    finally:
        raw.close()
    assert str(detach.fields[2].value[0]) == "amqp:link:transfer-limit-exceeded"
    bodies = [str(m) for m in received]
    assert bodies.count("polite") == 1
    assert 0 < bodies.count("flood") <= credit  # what the credit allowed was stored, nothing beyond it
    assert localbus.counts(Q)["total"] == 0


def test_idle_time_out_is_advertised_and_a_silent_connection_is_closed(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory(idle_timeout=0.5)
    raw = RawConnection(bus.port)
    try:
        opened = raw.handshake()
        frames = raw.read_until_closed()  # we send nothing, not even empty frames
    finally:
        raw.close()
    assert int(opened.fields[4]) == 500  # ms, as Service Bus advertises its 120000 by default
    assert _close_condition(frames) == "amqp:resource-limit-exceeded"
    with LocalBus(port=0) as default:
        raw = RawConnection(default.port)
        try:
            assert int(raw.handshake().fields[4]) == 120_000
        finally:
            raw.close()


def test_a_peek_reply_is_bounded_in_bytes_whatever_count_is_asked() -> None:
    broker = Broker({"q": queue_settings({})})
    q = broker.entity("q")
    assert q is not None
    for _ in range(5):
        broker.send(q, bytes(Message(body=b"x" * 100_000).encode()))
    assert len(broker.peek(q, 1, 1_000_000, max_bytes=250_000)) == 2
    assert len(broker.peek(q, 1, 1_000_000, max_bytes=10)) == 1  # never empty while messages exist
    assert len(broker.peek(q, 1, 1_000_000)) == 5


@pytest.mark.parametrize("sent", [b"", SASL_HEADER, SASL_HEADER[:3]])
def test_a_handshake_that_stalls_is_dropped(localbus_factory: LocalBusFactory, sent: bytes) -> None:
    bus = localbus_factory(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", bus.port), timeout=10) as sock:
        sock.sendall(sent)
        received = b""
        while chunk := sock.recv(65536):  # until localbus closes it; recv times out (fails) if it never does
            received += chunk
    bus.wait_for_connections(at_most=0)
    assert bus.running


# --- 4. binding and key -------------------------------------------------------------------------------------

def test_own_key_and_key_name_are_used_by_the_connection_string(localbus_factory: LocalBusFactory) -> None:
    """Already held (as ``sas_key=``); ``key=`` is the name the CLI and docs use."""
    bus = localbus_factory(key="s3cret", key_name="App")
    assert bus.host == "127.0.0.1"
    assert ";SharedAccessKeyName=App;SharedAccessKey=s3cret;" in bus.connection_string
    with client(bus) as sb, sender(sb, Q) as s:
        s.send_messages(ServiceBusMessage("x"))
    assert bus.counts(Q)["total"] == 1


def test_embedding_refuses_an_exposed_bind_without_consent_or_with_the_emulator_key() -> None:
    with pytest.raises(ExposureError, match="--allow-remote"):
        LocalBus(host="0.0.0.0", port=0)
    with pytest.raises(ExposureError, match="well-known emulator key"):
        LocalBus(host="0.0.0.0", port=0, allow_remote=True)
    with LocalBus(host="0.0.0.0", port=0, allow_remote=True, key="s3cret") as bus:
        assert bus.running
