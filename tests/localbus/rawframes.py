"""AMQP 1.0 at the frame level, for clients no AMQP library lets you write: ones that ignore link credit, never
read, stop halfway through the handshake or go silent.

Performatives are encoded and decoded with proton's :class:`~proton.Data`; everything else (headers, framing,
the order of frames) is up to the test.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import Any

from proton import Data, Described, Message, symbol, ubyte, uint, ulong

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
SASL_INIT, SASL_OUTCOME = 0x41, 0x44
OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
SENDER, RECEIVER = False, True


def performative(code: int, *fields: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), list(fields)))
    return bytes(data.encode())


def frame(body: bytes, channel: int = 0, kind: int = 0) -> bytes:
    return struct.pack(">IBBH", 8 + len(body), 2, kind, channel) + body


def transfer_frame(handle: int, delivery_id: int, payload: bytes) -> bytes:
    """An unsettled single-frame transfer of ``payload`` (an encoded message)."""
    return frame(performative(TRANSFER, uint(handle), uint(delivery_id), struct.pack(">Q", delivery_id), uint(0),
                              False) + payload)


def source(address: str) -> Any:
    return Described(ulong(0x28), [address])


def target(address: str) -> Any:
    return Described(ulong(0x29), [address])


class Frame:
    """A received frame: performative code, its fields, and any payload after it."""

    def __init__(self, channel: int, body: bytes) -> None:
        self.channel = channel
        data = Data()
        consumed = data.decode(body) if body else 0
        self.code: int | None = None
        self.fields: list[Any] = []
        if body:
            value = data.get_object()
            self.code = int(value.descriptor)
            self.fields = list(value.value)
        self.payload = body[consumed:]

    def __repr__(self) -> str:
        return f"Frame(0x{self.code or 0:02x}, {self.fields!r})"


class RawConnection:
    """A socket speaking AMQP frame by frame; ``expect`` reads until a frame of a given performative arrives."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.frames: list[Frame] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.eof = True
                raise EOFError("connection closed by localbus")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_header(self) -> bytes:
        return self._read_exact(8)

    def read_frame(self) -> Frame:
        size, doff, _kind, channel = struct.unpack(">IBBH", self._read_exact(8))
        rest = self._read_exact(size - 8)
        received = Frame(channel, rest[doff * 4 - 8:])
        self.frames.append(received)
        return received

    def expect(self, code: int) -> Frame:
        while True:
            received = self.read_frame()
            if received.code == code:
                return received

    def read_until_closed(self) -> list[Frame]:
        """Every frame until localbus closes the socket (raises TimeoutError if it never does)."""
        got: list[Frame] = []
        try:
            while True:
                got.append(self.read_frame())
        except EOFError:
            return got

    def handshake(self, idle_timeout_ms: int | None = None) -> Frame:
        """SASL ANONYMOUS, open and begin (channel 0); returns localbus's open frame."""
        self.send(SASL_HEADER)
        assert self.read_header() == SASL_HEADER
        self.read_frame()  # sasl-mechanisms
        self.send(frame(performative(SASL_INIT, symbol("ANONYMOUS")), kind=1))
        outcome = self.read_frame()
        assert outcome.code == SASL_OUTCOME and outcome.fields[0] == 0, outcome
        self.send(AMQP_HEADER)
        assert self.read_header() == AMQP_HEADER
        idle = uint(idle_timeout_ms) if idle_timeout_ms is not None else None
        self.send(frame(performative(OPEN, "raw-" + uuid.uuid4().hex[:8], "localhost", uint(65536), None, idle)))
        self.send(frame(performative(BEGIN, None, uint(0), uint(100000), uint(100000))))
        opened = self.expect(OPEN)
        self.expect(BEGIN)
        return opened

    def attach(self, handle: int, name: str, role: bool, address: str) -> Frame:
        """Attach a link; for a receiver (``role=RECEIVER``) no credit is granted."""
        terminus = (source(address), target(name)) if role == RECEIVER else (source(name), target(address))
        self.send(frame(performative(ATTACH, name, uint(handle), role, ubyte(0), ubyte(0), *terminus,
                                     None, None, uint(0) if role == SENDER else None)))
        return self.expect(ATTACH)

    def put_token(self, handle: int, audience: str, token: str, token_type: str = "servicebus.windows.net:sastoken",
                  delivery_id: int = 0) -> None:
        """Send a put-token request on a sender already attached to ``$cbs`` (the reply is not awaited)."""
        request = Message(id=str(uuid.uuid4()), reply_to="$cbs", body=token, properties={
            "operation": "put-token", "type": token_type, "name": audience, "expiration": int(time.time() + 3600)})
        self.transfer(handle, delivery_id, bytes(request.encode()))

    def transfer(self, handle: int, delivery_id: int, payload: bytes) -> None:
        self.send(transfer_frame(handle, delivery_id, payload))

    def close(self) -> None:
        self.sock.close()
