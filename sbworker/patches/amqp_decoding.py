"""One odd message must not stop the receiver: fill the gaps in the Service Bus SDK's AMQP decoder.

azure-servicebus 7.x decodes AMQP itself (`azure.servicebus._pyamqp`). Its table of type constructors has no entry
for `char`, `decimal32` and `decimal64`. A delivery carrying one of them (legal AMQP; Service Bus maps .NET `char`
to AMQP `char`, and a non-SDK publisher may send anything) raised inside the link, shut the receiver down, and on
every reconnect the same message came back: up to a hundred prefetched messages stayed locked each time, until
`MaxDeliveryCount` moved it after ten lock periods.

`install()` does two things, both limited to what the SDK cannot do at all:
1. it adds decoders for the three missing primitive types (`char` → str, `decimal32`/`decimal64` → Decimal);
2. it wraps `decode_payload`: if a section of a message still fails to decode, the other sections are kept (of
   the application properties, every one but the failing ones: a dead letter keeps its DeadLetterReason) and
   the application properties carry `PROP_UNDECODABLE` with the error. The delivery stays settleable, the
   listener dead-letters it as `UndecodableMessage`, and the broker keeps the original bytes in the DLQ.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Callable
from typing import Any

from sbworker.core.codes import PROP_UNDECODABLE

log = logging.getLogger(__name__)

MISSING_TYPES = "amqp_decoding.missing_types"
TOLERANT = "amqp_decoding.tolerant"

def _decode_char(buffer: memoryview, _depth: int = 0) -> tuple[memoryview, str]:
    """AMQP char: one UTF-32BE code point."""
    code = int.from_bytes(buffer[:4], "big")
    return buffer[4:], chr(code) if code <= 0x10FFFF else "\ufffd"


def _bid(raw: int, *, width: int, exponent_bits: int, bias: int) -> decimal.Decimal:
    """IEEE 754-2008 decimal in the Binary Integer Decimal encoding, which AMQP specifies."""
    sign = -1 if raw >> (width - 1) & 1 else 1
    if (raw >> (width - 6)) & 0b11111 == 0b11110:
        return decimal.Decimal("-Infinity" if sign < 0 else "Infinity")
    if (raw >> (width - 6)) & 0b11111 == 0b11111:
        return decimal.Decimal("NaN")
    coefficient_bits = width - 1 - exponent_bits
    if (raw >> (width - 3)) & 0b11 == 0b11:
        exponent = (raw >> (coefficient_bits - 2)) & ((1 << exponent_bits) - 1)
        coefficient = (0b100 << (coefficient_bits - 2)) | (raw & ((1 << (coefficient_bits - 2)) - 1))
    else:
        exponent = (raw >> coefficient_bits) & ((1 << exponent_bits) - 1)
        coefficient = raw & ((1 << coefficient_bits) - 1)
    return decimal.Decimal(sign * coefficient).scaleb(exponent - bias)


def _decode_decimal32(buffer: memoryview, _depth: int = 0) -> tuple[memoryview, decimal.Decimal]:
    return buffer[4:], _bid(int.from_bytes(buffer[:4], "big"), width=32, exponent_bits=8, bias=101)


def _decode_decimal64(buffer: memoryview, _depth: int = 0) -> tuple[memoryview, decimal.Decimal]:
    return buffer[8:], _bid(int.from_bytes(buffer[:8], "big"), width=64, exponent_bits=10, bias=398)


MISSING_DECODERS: dict[int, Callable[..., tuple[memoryview, Any]]] = {
    0x73: _decode_char,
    0x74: _decode_decimal32,
    0x84: _decode_decimal64,
}
# Fixed widths of AMQP encodings by the constructor's high nibble (AMQP 1.0, 1.2 "Type encodings").
_FIXED_WIDTH = {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}
_APPLICATION_PROPERTIES = 0x74  # the section's descriptor code
_STRING_KEYS = {0xA1: 1, 0xA3: 1, 0xB1: 4, 0xB3: 4}  # str8, sym8, str32, sym32: the width of their length
_SECTIONS = {0x70: "header", 0x71: "delivery_annotations", 0x72: "message_annotations", 0x73: "properties",
             0x74: "application_properties", 0x75: "data", 0x76: "sequence", 0x77: "value", 0x78: "footer"}


def skip_value(buffer: memoryview, offset: int = 0) -> int:
    """The offset just past the encoded value at `offset`, without decoding it."""
    constructor = buffer[offset]
    if constructor == 0x00:  # described: a descriptor, then the value
        return skip_value(buffer, skip_value(buffer, offset + 1))
    nibble = constructor >> 4
    if nibble in _FIXED_WIDTH:
        return offset + 1 + _FIXED_WIDTH[nibble]
    if nibble in (0xA, 0xC, 0xE):
        return offset + 2 + buffer[offset + 1]
    if nibble in (0xB, 0xD, 0xF):
        return offset + 5 + int.from_bytes(buffer[offset + 1:offset + 5], "big")
    raise ValueError(f"0x{constructor:02x} is not an AMQP type constructor")


def properties_map(buffer: memoryview) -> memoryview | None:
    """The encoded map of the application properties in an encoded message (None: it has none)."""
    offset = 0
    while offset < len(buffer):
        end = skip_value(buffer, offset)
        # A section is a described value: 0x00, its descriptor (smallulong 0x53 + code, or ulong 0x80 + 8 bytes).
        if buffer[offset] == 0x00 and buffer[offset + 1] in (0x53, 0x80):
            code_end = offset + (3 if buffer[offset + 1] == 0x53 else 10)
            if int.from_bytes(buffer[offset + 2:code_end], "big") == _APPLICATION_PROPERTIES:
                return buffer[code_end:end]
        offset = end
    return None


def property_encodings(buffer: memoryview) -> dict[bytes, bytes] | None:
    """Key -> the value's encoding (its constructor included) of the application properties in an encoded
    message; None when it has none, or a key that is not a string (which Service Bus never delivers)."""
    found = properties_map(buffer)
    return None if found is None else map_entries(found)


def map_entries(buffer: memoryview) -> dict[bytes, bytes] | None:
    """Key -> value encoding of an encoded map of string keys (None: another value, or a key of another type)."""
    constructor = buffer[0]
    if constructor == 0xC1:  # map8: size, count
        count, item = buffer[2], 3
    elif constructor == 0xD1:  # map32
        count, item = int.from_bytes(buffer[5:9], "big"), 9
    else:
        return None
    found: dict[bytes, bytes] = {}
    for _ in range(count // 2):
        width = _STRING_KEYS.get(buffer[item])
        if width is None:
            return None
        key_end = skip_value(buffer, item)
        value_end = skip_value(buffer, key_end)
        found[bytes(buffer[item + 1 + width:key_end])] = bytes(buffer[key_end:value_end])
        item = value_end
    return found


def tolerant(decode_payload: Callable[[memoryview], Any]) -> Callable[[memoryview], Any]:
    """Wrap the SDK's decode_payload: a section it cannot decode is reported in the properties, not raised."""

    def decode(buffer: memoryview) -> Any:
        try:
            return decode_payload(buffer)
        except Exception as error:
            return _salvage(decode_payload, memoryview(buffer), error)

    decode.__wrapped__ = decode_payload  # type: ignore[attr-defined]
    return decode


def _salvage(decode_payload: Callable[[memoryview], Any], buffer: memoryview, error: Exception) -> Any:
    fields: dict[str, Any] = {}
    problems: list[str] = []
    offset = 0
    try:
        while offset < len(buffer):
            end = skip_value(buffer, offset)
            section = _SECTIONS.get(buffer[offset + 2], f"section 0x{buffer[offset + 2]:02x}")
            try:
                part = decode_payload(buffer[offset:end])
            except Exception as section_error:
                kept = _one_by_one(buffer[offset:end], problems) if buffer[offset + 2] == _APPLICATION_PROPERTIES \
                    else None
                if kept is None:
                    problems.append(f"{section}: {type(section_error).__name__}: {section_error}")
                else:  # the others, DeadLetterReason among them when a dead letter is peeked
                    fields["application_properties"] = kept
            else:
                for name, value in part._asdict().items():
                    if value is None:
                        continue
                    if name in ("data", "sequence") and fields.get(name):
                        fields[name] = [*fields[name], *value]
                    else:
                        fields[name] = value
            offset = end
    except (ValueError, IndexError) as framing:
        problems.append(f"message framing: {framing}")
    if not problems:
        problems.append(f"{type(error).__name__}: {error}")
    description = ("the Service Bus SDK cannot decode this message (" + "; ".join(problems) + ")")[:1000]
    properties = dict(fields.get("application_properties") or {})
    properties[PROP_UNDECODABLE.encode()] = description.encode()
    fields["application_properties"] = properties
    log.warning("a delivery could not be decoded by the SDK: %s", description)
    from azure.servicebus._pyamqp.message import Message

    return Message(**fields)


def _one_by_one(section: memoryview, problems: list[str]) -> dict[bytes, Any] | None:
    """The application properties the SDK can decode, each failing one named in `problems`; None if the section
    itself cannot be read."""
    from azure.servicebus._pyamqp._decode import _DECODE_BY_CONSTRUCTOR

    try:
        encodings = property_encodings(section)
    except (ValueError, IndexError):
        return None
    if encodings is None:
        return None
    kept: dict[bytes, Any] = {}
    for key, encoding in encodings.items():
        try:
            kept[key] = _DECODE_BY_CONSTRUCTOR[encoding[0]](memoryview(encoding)[1:])[1]
        except Exception as error:
            problems.append(f"application property {key.decode('utf-8', 'replace')!r}: "
                            f"{type(error).__name__}: {error}")
    return kept


def install() -> list[str]:
    """Patch the SDK's decoder; returns the names of the parts installed.

    Called once, by `sbworker.patches.install`, and only on a verified SDK version: the listener, the CLI and the
    dashboard all receive (and peek) through it.
    """
    from azure.servicebus._pyamqp import _decode

    installed = []
    table = getattr(_decode, "_DECODE_BY_CONSTRUCTOR", None)
    if table is not None:
        for constructor, decoder in MISSING_DECODERS.items():
            if table[constructor] is None:
                table[constructor] = decoder
        installed.append(MISSING_TYPES)
    modules = decoder_modules()
    if all(hasattr(module, "decode_payload") for module in modules):
        wrapped = tolerant(_decode.decode_payload)
        for module in modules:
            module.decode_payload = wrapped
        installed.append(TOLERANT)
    return installed


def decoder_modules() -> list[Any]:
    """The SDK's modules that call `decode_payload` by a name of their own, `_decode` first: the receive links
    (sync and aio), and the management replies (peek, received deferred messages), which `sbworker dlq` and the
    dashboard's dead-letter page read: one undecodable dead letter there made every peek fail."""
    from azure.servicebus._pyamqp import _decode, receiver
    from azure.servicebus._pyamqp.aio import _receiver_async
    from azure.servicebus._transport import _pyamqp_transport

    return [_decode, receiver, _receiver_async, _pyamqp_transport]
