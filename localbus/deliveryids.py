"""Renumber the delivery ids of incoming transfers, so clients that number them loosely are not disconnected.

AMQP 1.0 (2.7.5) numbers the transfers of a session consecutively, and proton closes the connection on the first
gap or repeat (``amqp:session:invalid-field``, "sequencing error"). The aio azure-servicebus SDK reads its session
counter before an ``await`` and increments it after, so concurrent sends, such as ``AutoLockRenewer`` renewing
several locks at once, repeat an id and then skip one. Service Bus accepts that; so must localbus.

:class:`DeliveryIdRewriter` sits between the socket and proton. It passes bytes through unchanged, except that
the first frame of every incoming delivery gets the id proton expects next (continuation frames get the id of
their delivery). A client only ever sees the ids again in our dispositions, which for a well-behaved client are
the ids it sent; for a loose one they settle its repeated id, which is what its SDK looks up.
"""

from __future__ import annotations

import struct

from . import codec

AMQP = b"AMQP"
BEGIN, TRANSFER, END = 0x11, 0x14, 0x17
# Frames above this are passed through unread (proton enforces its own limits); every client splits a
# message into frames far smaller than this.
MAX_REWRITTEN_FRAME = 4 * 1024 * 1024


def _performative(body: bytes) -> tuple[int | None, int]:
    """(descriptor code, offset of the field list) of an AMQP frame body; code None if not recognised."""
    if len(body) >= 3 and body[0] == 0x00 and body[1] == 0x53:
        return body[2], 3
    if len(body) >= 10 and body[0] == 0x00 and body[1] == 0x80:
        return int.from_bytes(body[2:10], "big"), 10
    return None, 0


def _fields(body: bytes, at: int, wanted: int) -> list[tuple[int, int]]:
    """(start, end) offsets of the first ``wanted`` fields of the list at ``at`` (fewer if the list is short)."""
    count, pos, _ = codec.compound_items(body, at)
    spans = []
    for _ in range(min(count, wanted)):
        end = codec.skip_value(body, pos)
        spans.append((pos, end))
        pos = end
    return spans


def _uint(body: bytes, span: tuple[int, int]) -> int | None:
    value = codec.decode_scalar(body[span[0]:span[1]])
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _true(body: bytes, span: tuple[int, int]) -> bool:
    code = body[span[0]]
    return code == 0x41 or (code == 0x56 and body[span[0] + 1] != 0)


class DeliveryIdRewriter:
    """Per-connection filter of the client→server byte stream (protocol headers, SASL frames, AMQP frames)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._passthrough = 0  # bytes of an oversized frame still to pass through unread
        self._off = False  # the stream is not understood: pass everything through, proton decides
        self._next: dict[int, int] = {}  # channel -> delivery id proton expects next
        self._open: dict[tuple[int, int], int] = {}  # (channel, handle) -> id of a delivery still in progress
        self.rewritten = 0

    def feed(self, data: bytes) -> bytes:
        """Bytes read from the socket → bytes to give proton (complete frames; a partial one is held back)."""
        if self._off:
            return data
        out = bytearray()
        view = memoryview(data)
        if self._passthrough:
            n = min(self._passthrough, len(view))
            out += view[:n]
            view = view[n:]
            self._passthrough -= n
        self._buffer += view
        buf = self._buffer
        pos = 0
        while not self._off:
            if len(buf) - pos < 8:
                break
            if buf[pos:pos + 4] == AMQP:  # protocol header (AMQP or SASL layer)
                out += buf[pos:pos + 8]
                pos += 8
                continue
            size, doff, kind, channel = struct.unpack_from(">IBBH", buf, pos)
            if size < 8 or doff < 2:
                self._off = True  # garbage: proton will refuse it
                break
            if size > MAX_REWRITTEN_FRAME:
                available = len(buf) - pos
                out += buf[pos:]
                pos = len(buf)
                self._passthrough = size - available if size > available else 0
                break
            if len(buf) - pos < size:
                break
            frame = bytes(buf[pos:pos + size])
            pos += size
            out += self._frame(frame, doff, kind, channel) if kind == 0 and size > doff * 4 else frame
        if self._off:
            out += buf[pos:]
            pos = len(buf)
        del buf[:pos]
        return bytes(out)

    def _frame(self, frame: bytes, doff: int, kind: int, channel: int) -> bytes:
        head = doff * 4
        body = frame[head:]
        try:
            code, at = _performative(body)
            if code == BEGIN:
                spans = _fields(body, at, 2)
                if len(spans) == 2:
                    first = _uint(body, spans[1])
                    if first is not None:
                        self._next[channel] = first
                self._forget(channel)
            elif code == END:
                self._next.pop(channel, None)
                self._forget(channel)
            elif code == TRANSFER:
                return self._transfer(frame, head, body, at, channel)
        except (codec.DecodeError, IndexError, struct.error):
            pass  # malformed: proton answers it
        return frame

    def _forget(self, channel: int) -> None:
        for key in [k for k in self._open if k[0] == channel]:
            del self._open[key]

    def _transfer(self, frame: bytes, head: int, body: bytes, at: int, channel: int) -> bytes:
        spans = _fields(body, at, 9)
        if len(spans) < 2 or channel not in self._next:
            return frame
        handle = _uint(body, spans[0])
        sent_id = _uint(body, spans[1])
        if handle is None:
            return frame
        more = len(spans) > 5 and _true(body, spans[5])
        aborted = len(spans) > 8 and _true(body, spans[8])
        key = (channel, handle)
        if key in self._open:
            wanted = self._open[key]
        elif sent_id is None:
            return frame  # a first frame without an id: a protocol error proton reports
        else:
            wanted = self._next[channel]
            self._next[channel] = (wanted + 1) & 0xFFFFFFFF
        if more and not aborted:
            self._open[key] = wanted
        else:
            self._open.pop(key, None)
        if sent_id is None or sent_id == wanted:
            return frame
        self.rewritten += 1
        count, first, end = codec.compound_items(body, at)
        items = body[first:spans[1][0]] + b"\x70" + struct.pack(">I", wanted) + body[spans[1][1]:end]
        new_body = body[:at] + b"\xd0" + struct.pack(">II", len(items) + 4, count) + items + body[end:]
        return struct.pack(">I", head + len(new_body)) + frame[4:head] + new_body
