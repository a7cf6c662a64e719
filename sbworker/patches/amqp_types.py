"""A copy of a received message sends each application property exactly as it arrived.

azure-servicebus 7.x hands a received property back as a bare Python value: every integer width (byte, short, int,
long, and the unsigned ones) and a timestamp (epoch milliseconds) as an int, a string and a binary alike as bytes.
On send it encodes every int as a 32-bit AMQP int and every bytes value as a string. So a copy of a received
message (an early approval re-enqueued to wait for its instance, a dead letter resubmitted) changed the types of
its properties, and one carrying a long, a ulong or a timestamp past 32 bits (what @azure/service-bus sends for a
JavaScript number over 2^32 or a Date) could not be sent at all (`ValueError: Value supplied for int invalid`):
the approval went round abandon -> redelivery until MaxDeliveryCount. Its decimal128 decoder reads .NET's layout
and its encoder writes another, so even a decimal did not survive a round trip.

A copy needs no Python value at all: the received encoding is the property. `install()`:
1. wraps `decode_payload` (over amqp_decoding's tolerant one) so that a message's application properties come
   back as `EncodedProperties`: the SDK's dict, plus their encoded map from the received bytes, from which a copy
   cuts each value's encoding (`amqp_decoding.map_entries`). This also works when the SDK could not decode a
   value (amqp_decoding's `UndecodableMessage`), so a resubmit of such a dead letter loses nothing;
2. registers an encoder that writes such an encoding back unchanged, so `as_sent` can hand a new
   ServiceBusMessage each property as `{TYPE: ENCODED, VALUE: <bytes>}`, which the SDK's own `encode_value` sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sbworker.patches.amqp_decoding import decoder_modules, map_entries, properties_map

TYPED_PROPERTIES = "amqp_types.typed_properties"

# The name under which the SDK's encoder finds ours (its own type names are upper case: no clash).
ENCODED = "sbworker.encoded"


class EncodedProperties(dict[Any, Any]):
    """A received message's application properties as the SDK decoded them, and their encoded map, split into
    each one's encoding only when a copy is made: copies are rare (finding the map adds ~4 us to the SDK's ~9 us
    decode of a message with five properties; splitting it would add ~4 us more)."""

    __slots__ = ("encoded_map",)

    def __init__(self, values: Mapping[Any, Any], encoded_map: bytes) -> None:
        super().__init__(values)
        self.encoded_map = encoded_map

    def encodings(self) -> dict[bytes, bytes] | None:
        """Key -> the value's encoding; None if the map has a key that is not a string."""
        return map_entries(memoryview(self.encoded_map))


def keeping_encodings(decode_payload: Callable[[memoryview], Any]) -> Callable[[memoryview], Any]:
    """Wrap the SDK's decode_payload: application properties come back as EncodedProperties."""

    def decode(buffer: memoryview) -> Any:
        message = decode_payload(buffer)
        if message.application_properties is None:
            # No section (or a null one, which a copy sends as nothing either way): no map to look for. Most
            # messages carry none, and the look costs them 1.8 of the 8.5 us this decode took (timeit, 2026-12-06).
            return message
        try:
            encoded_map = properties_map(memoryview(buffer))
        except (ValueError, IndexError):  # framing the SDK's decoder (or amqp_decoding) already reported
            return message
        if encoded_map is None:
            return message
        return message._replace(application_properties=EncodedProperties(message.application_properties or {},
                                                                          bytes(encoded_map)))

    decode.__wrapped__ = decode_payload  # type: ignore[attr-defined]
    return decode


def as_sent(properties: Mapping[Any, Any] | None) -> dict[bytes, Any] | None:
    """The properties as they arrived, each in the form a new message sends unchanged (the SDK's typed value);
    None when they were not decoded through `keeping_encodings` (the caller then copies the decoded values).
    Properties our own decoder added (amqp_decoding's report) were never on the wire and are not in it."""
    if not isinstance(properties, EncodedProperties):
        return None
    try:
        encodings = properties.encodings()
    except (ValueError, IndexError):
        encodings = None
    if encodings is None:
        return None
    from azure.servicebus._pyamqp.types import TYPE, VALUE

    return {key: {TYPE: ENCODED, VALUE: encoding} for key, encoding in encodings.items()}


def _encode_as_received(output: bytearray, value: bytes, **_: Any) -> None:
    """Write a received encoding back (only ever a map value, which always carries its constructor)."""
    output.extend(value)


def install() -> list[str]:
    """Wrap the SDK's (already tolerant) decode_payload and teach its encoder ENCODED; the names of what applied.

    Called once by `sbworker.patches.install`, after amqp_decoding, and only on a verified SDK version.
    """
    from azure.servicebus._pyamqp import _encode
    from azure.servicebus._pyamqp.types import TYPE, VALUE

    modules = decoder_modules()
    table = getattr(_encode, "_ENCODE_MAP", None)
    if table is None or not callable(getattr(_encode, "encode_value", None)) or (TYPE, VALUE) != ("TYPE", "VALUE") \
            or not all(hasattr(module, "decode_payload") for module in modules):
        return []
    table[ENCODED] = _encode_as_received
    wrapped = keeping_encodings(modules[0].decode_payload)
    for module in modules:
        module.decode_payload = wrapped
    return [TYPED_PROPERTIES]
