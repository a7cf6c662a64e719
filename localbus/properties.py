"""Which application properties a message may carry: only what Service Bus stores and gives back.

AMQP 1.0 (3.2.5) restricts application-property keys to strings and values to simple types. Service Bus narrows
the values further to the types of its .NET mapping table ("AMQP 1.0 in Azure Service Bus", type mapping):
null, boolean, ubyte/ushort/uint/ulong, byte/short/int/long, float, double, decimal128, char, timestamp, uuid,
binary, string, and three described types (``com.microsoft:uri`` over string, ``com.microsoft:datetime-offset``
and ``com.microsoft:timespan`` over long). decimal32, decimal64, symbol, list, map and array are not in it.

A message outside these rules is refused at send. Accepting it would store something that fails later, when a
dead-letter rewrites its properties or a client decodes it, long after the sender could have been told.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from proton import Data

from . import codec

STRING_CODES = (0xA1, 0xB1)
LONG_CODES = (0x81, 0x55)

# Every AMQP encoding of a type in Service Bus's mapping table, with the type's name.
ALLOWED_VALUE_TYPES = {
    0x40: "null", 0x41: "boolean", 0x42: "boolean", 0x56: "boolean",
    0x50: "ubyte", 0x60: "ushort", 0x70: "uint", 0x52: "uint", 0x43: "uint",
    0x80: "ulong", 0x53: "ulong", 0x44: "ulong",
    0x51: "byte", 0x61: "short", 0x71: "int", 0x54: "int", 0x81: "long", 0x55: "long",
    0x72: "float", 0x82: "double", 0x94: "decimal128", 0x73: "char", 0x83: "timestamp", 0x98: "uuid",
    0xA0: "binary", 0xB0: "binary", 0xA1: "string", 0xB1: "string",
}
REFUSED_TYPE_NAMES = {
    0x74: "decimal32", 0x84: "decimal64", 0xA3: "symbol", 0xB3: "symbol",
    0x45: "list", 0xC0: "list", 0xD0: "list", 0xC1: "map", 0xD1: "map", 0xE0: "array", 0xF0: "array",
}
# Described types Service Bus defines for .NET Uri, DateTimeOffset and TimeSpan: descriptor -> allowed encodings.
DESCRIBED_TYPES = {
    b"com.microsoft:uri": STRING_CODES,
    b"com.microsoft:datetime-offset": LONG_CODES,
    b"com.microsoft:timespan": LONG_CODES,
}


class InvalidProperty(ValueError):
    """An application property Service Bus would not store; the message names the key and the type."""


def type_name(code: int) -> str:
    return ALLOWED_VALUE_TYPES.get(code) or REFUSED_TYPE_NAMES.get(code) or f"type 0x{code:02x}"


def _show_key(raw: bytes) -> str:
    """A readable rendering of a key of any type, for error messages."""
    code = raw[0]
    try:
        if code == 0x82:
            return repr(struct.unpack(">d", raw[1:9])[0])
        if code == 0x72:
            return repr(struct.unpack(">f", raw[1:5])[0])
        value = codec.decode_scalar(raw)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return repr(value)
    except (codec.DecodeError, IndexError, struct.error):
        return "0x" + raw[:16].hex()


def _described_name(raw: bytes) -> tuple[bytes | None, int]:
    """(descriptor symbol or None, offset of the described value) for a value starting with 0x00."""
    descriptor_end = codec.skip_value(raw, 1)
    try:
        descriptor = codec.decode_scalar(raw, 1)
    except codec.DecodeError:
        descriptor = None
    return (descriptor if isinstance(descriptor, bytes) else None), descriptor_end


def check_value(key: str, raw: bytes) -> None:
    """Refuse a value whose encoding is not one Service Bus maps; ``raw`` is the encoded value."""
    code = raw[0]
    if code in ALLOWED_VALUE_TYPES:
        return
    if code == 0x00:
        descriptor, value_at = _described_name(raw)
        allowed = DESCRIBED_TYPES.get(descriptor) if descriptor is not None else None
        if allowed is not None and raw[value_at] in allowed:
            return
        shown = descriptor.decode("ascii", "replace") if descriptor is not None else "non-symbolic descriptor"
        raise InvalidProperty(f"Serialization operation failed due to unsupported type described ({shown}) "
                              f"of application property {key!r}.")
    raise InvalidProperty(f"Serialization operation failed due to unsupported type {type_name(code)} "
                          f"of application property {key!r}.")


def check_application_properties(section: bytes) -> None:
    """Raise :class:`InvalidProperty` unless every key is a string and every value a Service Bus type.

    ``section`` is the whole described application-properties section (empty when the message has none).
    Malformed encodings raise :class:`codec.DecodeError`.
    """
    if not section:
        return
    for key, raw_key, raw_value in codec.map_entries(section):
        if raw_key[0] not in STRING_CODES:
            raise InvalidProperty(f"Application property key {_show_key(raw_key)} is of type "
                                  f"{type_name(raw_key[0])}; application property keys must be strings.")
        check_value(str(key), raw_value)


def encode_properties(values: Mapping[Any, Any] | None, skip: frozenset[str] = frozenset()) -> dict[str, bytes]:
    """Encode decoded property values (``propertiesToModify`` of a settlement) as AMQP, keys as strings.

    Keys that are not strings are refused as at send; ``skip`` leaves out keys with another meaning (the
    dead-letter reason and description, which travel in the same map).
    """
    out: dict[str, bytes] = {}
    for key, value in (values or {}).items():
        if not isinstance(key, str):
            raise InvalidProperty(f"Application property key {key!r} is of type {type(key).__name__}; "
                                  "application property keys must be strings.")
        if str(key) in skip:
            continue
        data = Data()
        data.put_object(value)
        out[str(key)] = bytes(data.encode())
    return out
