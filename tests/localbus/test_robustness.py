"""Garbage on the wire, abrupt disconnects, restarts and the embedding API."""

from __future__ import annotations

import socket
import struct

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localbus import LocalBus
from tests.fixtures.localbus import LocalBusFactory
from tests.support.wait import until

from .sdk import bodies, client, sender

Q = "workflow-requests"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"


def _poke(port: int, payload: bytes, reset: bool = False, linger: float = 0.1) -> None:
    """Send bytes, read whatever comes back for ``linger`` s, then close (with an RST if ``reset``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload)
        s.settimeout(linger)
        try:
            while s.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            pass
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _roundtrip(bus: LocalBus, body: str) -> None:
    """Send `body` and receive it back. Receives are repeated until it comes (one receive's 5 s was a window that
    a loaded machine could miss, right after a restart too); the bound is a liveness bound."""
    with client(bus) as sb:
        with sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage(body))
        with sb.get_queue_receiver(Q, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            received = until(lambda: bodies(r.receive_messages(max_message_count=1, max_wait_time=5)),
                             what=f"{body!r} received back", timeout=60, interval=0)
            assert received == [body]


@pytest.mark.parametrize(
    "payload",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
     AMQP_HEADER + b"\xff" * 64,
     SASL_HEADER + b"\x00\x00\x00\x10\x02\x01\x00\x00\x00\x53\x41\xff\xff\xff\xff\xff",
     AMQP_HEADER + struct.pack(">IBBH", 0x7FFFFFFF, 2, 0, 0),  # absurd frame size
     AMQP_HEADER + struct.pack(">IBBH", 8, 2, 0, 0),  # empty frame before open
     SASL_HEADER[:5],
     b""],
)
def test_malformed_input_closes_only_that_connection(localbus: LocalBus, payload: bytes) -> None:
    _poke(localbus.port, payload)
    _poke(localbus.port, payload, reset=True)
    localbus.wait_for_connections(at_most=0)
    assert localbus.running


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from([b"", AMQP_HEADER, SASL_HEADER]), junk=st.binary(max_size=300))
def test_random_bytes_never_crash_the_server(localbus: LocalBus, prefix: bytes, junk: bytes) -> None:
    _poke(localbus.port, prefix + junk, reset=bool(junk) and junk[0] % 2 == 0, linger=0.01)
    assert localbus.running
    localbus.wait_for_connections(at_most=0)


def test_server_still_serves_after_abuse_and_abrupt_sdk_disconnects(localbus: LocalBus) -> None:
    for payload in (AMQP_HEADER + b"\x00" * 40, SASL_HEADER + b"junk", b"\x00" * 8):
        _poke(localbus.port, payload, reset=True)
    # An SDK receiver whose socket is torn down under it while holding a lock.
    with client(localbus) as sb:
        with sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage("held"))
        r = sb.get_queue_receiver(Q)
        r.__enter__()
        assert bodies(r.receive_messages(max_message_count=1, max_wait_time=5)) == ["held"]
        r._handler._connection._transport.sock.shutdown(socket.SHUT_RDWR)  # abrupt, no AMQP close
        localbus.wait_for_connections(at_most=0)
        assert localbus.counts(Q)["locked"] == 1
    _roundtrip(localbus, "still fine")


def test_restart_on_the_same_port_is_prompt(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory()
    port = bus.port
    with socket.create_connection(("127.0.0.1", port)) as held:  # an established connection during the restart
        held.sendall(AMQP_HEADER)
        bus.stop()
        assert not bus.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        bus.start()
    assert bus.port == port
    _roundtrip(bus, "after")


def test_embedding_api_is_idempotent_and_a_context_manager(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory()
    assert bus.start() is bus and bus.running
    assert bus.connection_string == (f"Endpoint=sb://localhost:{bus.port};SharedAccessKeyName="
                                     "RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
    bus.stop()
    bus.stop()
    with LocalBus(port=0, queues={"a": {}}) as other:
        assert other.running and other.port not in (0, bus.port)
        assert set(other.queues) >= {"a", Q}  # the repo Config.json is the default
    assert not other.running
