"""Just enough of the AMQP 1.0 type system to handle messages as raw sections.

Messages are stored as the bytes the client sent, split into sections. On each delivery the broker writes a fresh
header (delivery count) and message annotations (sequence number, enqueued time, lock expiry) and passes the
properties, application properties and body through untouched: no decode/re-encode of payloads, so content keeps
full fidelity and the hot path stays cheap.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES, APPLICATION_PROPERTIES = 0x70, 0x71, 0x72, 0x73, 0x74
DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x75, 0x76, 0x77, 0x78
BODY_SECTIONS = (DATA, AMQP_SEQUENCE, AMQP_VALUE)

_SYMBOLIC_DESCRIPTORS = {
    b"amqp:header:list": HEADER, b"amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    b"amqp:message-annotations:map": MESSAGE_ANNOTATIONS, b"amqp:properties:list": PROPERTIES,
    b"amqp:application-properties:map": APPLICATION_PROPERTIES, b"amqp:data:binary": DATA,
    b"amqp:amqp-sequence:list": AMQP_SEQUENCE, b"amqp:amqp-value:*": AMQP_VALUE, b"amqp:footer:map": FOOTER,
}

# Annotations the broker owns: stripped from what a client sends, written fresh on every delivery.
BROKER_ANNOTATIONS = frozenset({b"x-opt-sequence-number", b"x-opt-enqueued-time", b"x-opt-locked-until",
                                b"x-opt-lock-token", b"x-opt-message-state"})
SCHEDULED_ENQUEUE_TIME = b"x-opt-scheduled-enqueue-time"


class DecodeError(ValueError):
    """Bytes that are not a well-formed AMQP message."""


_FIXED_WIDTH = {0x40: 0, 0x41: 0, 0x42: 0, 0x43: 0, 0x44: 0, 0x45: 0, 0x50: 1, 0x51: 1, 0x52: 1, 0x53: 1,
                0x54: 1, 0x55: 1, 0x56: 1, 0x60: 2, 0x61: 2, 0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x74: 4, 0x80: 8,
                0x81: 8, 0x82: 8, 0x83: 8, 0x84: 8, 0x94: 16, 0x98: 16}


def skip_value(buf: bytes, pos: int) -> int:
    """Return the offset just past the AMQP value that starts at ``pos``."""
    try:
        code = buf[pos]
        pos += 1
        if code == 0x00:  # described: descriptor then value
            return skip_value(buf, skip_value(buf, pos))
        width = _FIXED_WIDTH.get(code)
        if width is not None:
            end = pos + width
        elif code in (0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0):
            end = pos + 1 + buf[pos]
        elif code in (0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0):
            end = pos + 4 + int.from_bytes(buf[pos:pos + 4], "big")
        else:
            raise DecodeError(f"unknown AMQP type code 0x{code:02x}")
    except IndexError:
        raise DecodeError("truncated AMQP value") from None
    if end > len(buf):
        raise DecodeError("truncated AMQP value")
    return end


def decode_scalar(buf: bytes, pos: int = 0) -> Any:
    """Decode one primitive value (enough for header, properties and annotation values)."""
    code = buf[pos]
    p = pos + 1
    if code in (0x40,):
        return None
    if code in (0x41, 0x42):
        return code == 0x41
    if code == 0x56:
        return buf[p] != 0
    if code in (0x43, 0x44):
        return 0
    if code in (0x50, 0x52, 0x53):
        return buf[p]
    if code == 0x51:
        return struct.unpack_from(">b", buf, p)[0]
    if code == 0x54:
        return struct.unpack_from(">b", buf, p)[0]
    if code == 0x55:
        return struct.unpack_from(">b", buf, p)[0]
    if code == 0x60:
        return struct.unpack_from(">H", buf, p)[0]
    if code == 0x61:
        return struct.unpack_from(">h", buf, p)[0]
    if code == 0x70:
        return struct.unpack_from(">I", buf, p)[0]
    if code == 0x71:
        return struct.unpack_from(">i", buf, p)[0]
    if code == 0x80:
        return struct.unpack_from(">Q", buf, p)[0]
    if code in (0x81, 0x83):
        return struct.unpack_from(">q", buf, p)[0]
    if code == 0x98:
        return uuid.UUID(bytes=bytes(buf[p:p + 16]))
    if code in (0xA0, 0xA1, 0xA3):
        raw = bytes(buf[p + 1:p + 1 + buf[p]])
        return raw.decode("utf-8") if code == 0xA1 else raw
    if code in (0xB0, 0xB1, 0xB3):
        n = int.from_bytes(buf[p:p + 4], "big")
        raw = bytes(buf[p + 4:p + 4 + n])
        return raw.decode("utf-8") if code == 0xB1 else raw
    raise DecodeError(f"unsupported scalar type 0x{code:02x}")


def compound_items(buf: bytes, pos: int) -> tuple[int, int, int]:
    """For a list/map at ``pos``: (count, first element offset, end offset)."""
    code = buf[pos]
    if code == 0x45:
        return 0, pos + 1, pos + 1
    if code in (0xC0, 0xC1):
        size, count = buf[pos + 1], buf[pos + 2]
        return count, pos + 3, pos + 2 + size
    if code in (0xD0, 0xD1):
        size, count = struct.unpack_from(">II", buf, pos + 1)
        return count, pos + 9, pos + 5 + size
    raise DecodeError(f"expected a list or map, got type 0x{code:02x}")


def split_sections(buf: bytes) -> list[tuple[int, bytes]]:
    """Split an encoded message into (section code, section bytes incl. descriptor)."""
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(buf)
    if n == 0:
        raise DecodeError("empty message")
    while pos < n:
        if buf[pos] != 0x00:
            raise DecodeError("message section is not a described type")
        desc_end = skip_value(buf, pos + 1)
        descriptor = decode_scalar(buf, pos + 1)
        code = _SYMBOLIC_DESCRIPTORS.get(descriptor) if isinstance(descriptor, bytes) else descriptor
        if not isinstance(code, int) or not HEADER <= code <= FOOTER:
            raise DecodeError(f"unknown message section {descriptor!r}")
        end = skip_value(buf, desc_end)
        out.append((code, bytes(buf[pos:end])))
        pos = end
    return out


def _section_value_offset(section: bytes) -> int:
    return skip_value(section, 1)


def _list_fields(section: bytes) -> list[Any]:
    count, pos, _ = compound_items(section, _section_value_offset(section))
    values: list[Any] = []
    for _ in range(count):
        nxt = skip_value(section, pos)
        try:
            values.append(decode_scalar(section, pos))
        except DecodeError:
            values.append(None)
        pos = nxt
    return values


def map_entries(section: bytes) -> list[tuple[Any, bytes, bytes]]:
    """Entries of a map section as (decoded key, raw key bytes, raw value bytes).

    A key of a type this module does not decode (a double, say) comes back as None with its raw bytes, so a
    message can always be re-encoded with its entries intact.
    """
    count, pos, _ = compound_items(section, _section_value_offset(section))
    entries = []
    for _ in range(count // 2):
        key_end = skip_value(section, pos)
        value_end = skip_value(section, key_end)
        try:
            key = decode_scalar(section, pos)
        except DecodeError:
            key = None
        entries.append((key, section[pos:key_end], section[key_end:value_end]))
        pos = value_end
    return entries


# --- encoding ------------------------------------------------------------------------------------------------

def enc_symbol(value: bytes) -> bytes:
    return (b"\xa3" + bytes([len(value)]) + value) if len(value) < 256 else (
        b"\xb3" + struct.pack(">I", len(value)) + value)


def enc_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return (b"\xa1" + bytes([len(raw)]) + raw) if len(raw) < 256 else (b"\xb1" + struct.pack(">I", len(raw)) + raw)


def enc_long(value: int) -> bytes:
    return b"\x81" + struct.pack(">q", value)


def enc_int(value: int) -> bytes:
    return b"\x71" + struct.pack(">i", value)


def enc_timestamp(ms: int) -> bytes:
    return b"\x83" + struct.pack(">q", ms)


def enc_uuid(value: uuid.UUID) -> bytes:
    return b"\x98" + value.bytes


def described_map(code: int, entries: list[bytes]) -> bytes:
    """A described map section (map32) from already-encoded key+value pairs."""
    body = b"".join(entries)
    return b"\x00\x53" + bytes([code]) + b"\xd1" + struct.pack(">II", len(body) + 4, len(entries) * 2) + body


def header_section(durable: bool, priority: int | None, ttl_ms: int | None, first_acquirer: bool,
                   delivery_count: int) -> bytes:
    """An explicit header: the SDK only reports delivery_count when the header carries it."""
    items = (b"\x41" if durable else b"\x42") + (b"\x40" if priority is None else b"\x50" + bytes([priority]))
    items += b"\x40" if ttl_ms is None else b"\x70" + struct.pack(">I", ttl_ms)
    items += (b"\x41" if first_acquirer else b"\x42") + b"\x70" + struct.pack(">I", delivery_count)
    return b"\x00\x53\x70\xc0" + bytes([len(items) + 1, 5]) + items


# --- messages ------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class StoredMessage:
    """A message as the broker keeps it: decoded bits it acts on, raw bytes for everything else."""

    durable: bool = False
    priority: int | None = None
    ttl_ms: int | None = None
    first_acquirer: bool = False
    delivery_count: int = 0
    annotations: list[bytes] = field(default_factory=list)  # encoded key+value pairs, broker keys removed
    scheduled_ms: int | None = None
    message_id: str | None = None
    session_id: str | None = None  # the properties' group-id, as Service Bus reads it
    properties: bytes = b""
    application_properties: bytes = b""
    body: bytes = b""  # body sections and footer, in order

    def wire(self, delivery_count: int, extra_annotations: list[bytes]) -> bytes:
        """Encode for delivery with a given delivery count and broker annotations."""
        ann = self.annotations + extra_annotations
        return (header_section(self.durable, self.priority, self.ttl_ms, self.first_acquirer, delivery_count)
                + (described_map(MESSAGE_ANNOTATIONS, ann) if ann else b"")
                + self.properties + self.application_properties + self.body)

    def with_application_properties(self, updates: dict[str, str]) -> StoredMessage:
        """Copy with string application properties set (used for dead-letter reason/description)."""
        return self.with_raw_application_properties({k: enc_string(v) for k, v in updates.items()})

    def with_raw_application_properties(self, updates: dict[str, bytes]) -> StoredMessage:
        """Copy with application properties set to already-encoded values (``propertiesToModify``)."""
        kept = []
        if self.application_properties:
            kept = [k + v for key, k, v in map_entries(self.application_properties) if key not in updates]
        kept += [enc_string(k) + v for k, v in updates.items()]
        clone = StoredMessage(**{**self.__dict__})
        clone.application_properties = described_map(APPLICATION_PROPERTIES, kept)
        return clone

    def with_message_id(self, message_id: str) -> StoredMessage:
        """Copy with a message id (the properties section's first field), for a message sent without one."""
        rest = b""
        count = 1
        if self.properties:
            n, pos, end = compound_items(self.properties, _section_value_offset(self.properties))
            if n:
                rest = self.properties[skip_value(self.properties, pos):end]
                count = n
        items = enc_string(message_id) + rest
        clone = StoredMessage(**{**self.__dict__})
        clone.properties = b"\x00\x53\x73\xd0" + struct.pack(">II", len(items) + 4, count) + items
        clone.message_id = message_id
        return clone

    def with_annotation(self, key: bytes, encoded_value: bytes) -> StoredMessage:
        clone = StoredMessage(**{**self.__dict__})
        clone.annotations = [*self.annotations, enc_symbol(key) + encoded_value]
        return clone


def _id_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def parse_message(buf: bytes) -> StoredMessage:
    """Parse one encoded message into a :class:`StoredMessage` (raises :class:`DecodeError`)."""
    msg = StoredMessage()
    body: list[bytes] = []
    has_body = False
    for code, section in split_sections(buf):
        if code == HEADER:
            f = _list_fields(section) + [None] * 5
            msg.durable = bool(f[0])
            msg.priority = f[1] if isinstance(f[1], int) else None
            msg.ttl_ms = f[2] if isinstance(f[2], int) and f[2] > 0 else None
            msg.first_acquirer = bool(f[3])
            msg.delivery_count = f[4] if isinstance(f[4], int) else 0
        elif code == MESSAGE_ANNOTATIONS:
            for key, k, v in map_entries(section):
                if key in BROKER_ANNOTATIONS:
                    continue
                if key == SCHEDULED_ENQUEUE_TIME and v[:1] == b"\x83":
                    msg.scheduled_ms = decode_scalar(v)
                msg.annotations.append(k + v)
        elif code == PROPERTIES:
            msg.properties = section
            fields = _list_fields(section)
            msg.message_id = _id_text(fields[0]) if fields else None
            msg.session_id = fields[10] if len(fields) > 10 and isinstance(fields[10], str) else None
        elif code == APPLICATION_PROPERTIES:
            msg.application_properties = section
        elif code == DELIVERY_ANNOTATIONS:
            continue  # hop-by-hop: not stored
        else:
            has_body = has_body or code in BODY_SECTIONS
            body.append(section)
    if not has_body:
        raise DecodeError("message has no body section")
    msg.body = b"".join(body)
    return msg


def split_batch(buf: bytes) -> list[bytes] | None:
    """If ``buf`` is a batch envelope (message format 0x80013700), return its inner messages, else None.

    Proton's Python binding hides the transfer's message format, so batches are recognised by shape: the body is
    only data sections and each of them is itself a complete, well-formed message with a body.
    """
    sections = split_sections(buf)
    data = [s for code, s in sections if code == DATA]
    if not data or any(code in (AMQP_VALUE, AMQP_SEQUENCE) for code, _ in sections):
        return None
    inner: list[bytes] = []
    for section in data:
        count_pos = _section_value_offset(section)
        payload = section[count_pos + (2 if section[count_pos] == 0xA0 else 5):]
        if len(payload) < 4 or payload[0] != 0x00:
            return None
        try:
            parts = split_sections(payload)
        except (DecodeError, IndexError, struct.error):
            return None
        if not any(code in BODY_SECTIONS for code, _ in parts):
            return None
        inner.append(payload)
    return inner
