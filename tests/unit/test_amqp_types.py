"""A copy of a received message sends each application property exactly as it arrived: proton encodes a message
with a property of every type, the patched SDK decodes it, the SDK's own encoder writes the copy, and proton reads
the copy back (the broker round trips: tests/integration/test_property_types.py)."""

from __future__ import annotations

import uuid
from typing import Any

import proton
import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus._pyamqp import _decode
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

from sbworker import patches
from sbworker.core import messages
from sbworker.core.codes import PROP_UNDECODABLE
from sbworker.patches import amqp_decoding, amqp_types

# decimal128 2.5 in the two layouts found in the wild: IEEE 754-2008 (proton, Java) and .NET's, which the SDK reads.
IEEE_DECIMAL = (6175 << 113 | 25).to_bytes(16, "big")
DOTNET_DECIMAL = bytes([12, 62]) + bytes(10) + (25).to_bytes(4, "big")
EVERY_TYPE: dict[str, Any] = {
    "long": 2**40 + 7, "long-small": -5, "ulong": proton.ulong(2**64 - 1), "int": proton.int32(-(2**31)),
    "uint": proton.uint(2**32 - 1), "short": proton.short(-300), "ushort": proton.ushort(65_000),
    "byte": proton.byte(-128), "ubyte": proton.ubyte(255), "timestamp": proton.timestamp(1_765_011_234_567),
    "uuid": uuid.UUID(int=7), "double": 0.1, "float": proton.float32(1.5), "boolean": True,
    "binary": b"\x00\xff", "string": "\u00e9", "char": proton.char("\u00e9"), "null": None,
    "decimal128": proton.decimal128(DOTNET_DECIMAL),
    "uri": proton.Described(proton.symbol("com.microsoft:uri"), "https://example.com/orders/42"),
}


@pytest.fixture(autouse=True)
def installed() -> None:
    assert amqp_types.TYPED_PROPERTIES in patches.install()


def encode(properties: dict[str, Any]) -> bytes:
    return bytes(proton.Message(body=b"{}", inferred=True, subject="approval", properties=properties).encode())


def received(payload: bytes) -> Any:
    """What the receive link hands the SDK's message class (the patched decode_payload's result)."""
    return _decode.decode_payload(memoryview(payload))


def copied(properties: dict[str | bytes, Any]) -> dict[str, Any]:
    """`properties` sent by the SDK's own encoder, as proton reads them off the wire."""
    outgoing = PyamqpTransport.to_outgoing_amqp_message(
        ServiceBusMessage(b"{}", application_properties=properties).raw_amqp_message)
    wire = encode_payload(bytearray(), outgoing)
    message = proton.Message()
    message.decode(bytes(wire))
    return {key: bytes(value) if isinstance(value, memoryview) else value  # proton's view of a binary
            for key, value in (message.properties or {}).items()}


def typed(properties: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {key: (type(value), value) for key, value in properties.items()}


def test_every_type_is_copied_as_it_arrived() -> None:
    message = received(encode(EVERY_TYPE))
    assert message.application_properties[b"long"] == 2**40 + 7  # the SDK's decoded values are unchanged
    as_sent = amqp_types.as_sent(message.application_properties)
    assert as_sent is not None
    assert typed(copied({k.decode(): v for k, v in as_sent.items()})) == typed(EVERY_TYPE)


def test_the_plain_copy_the_patch_replaces_changes_types_and_cannot_send_a_long() -> None:
    """Why the patch exists: the SDK's decoded values, sent again, come back as other types (or not at all)."""
    decoded = dict(received(encode({"ushort": proton.ushort(7), "binary": b"\x00"})).application_properties)
    assert typed(copied(decoded)) == {"ushort": (proton.int32, 7), "binary": (str, "\x00")}
    with pytest.raises(ValueError, match="int"):
        copied({"long": 2**40})


def test_properties_of_a_section_the_sdk_cannot_decode_are_still_copied() -> None:
    """An IEEE decimal128 breaks the SDK's decoder: the message is dead-lettered UndecodableMessage, and a resubmit
    of that dead letter still sends every property, without the report our decoder added."""
    sent = {"amount": proton.decimal128(IEEE_DECIMAL), "long": 2**40}
    message = received(encode(sent))
    assert message.application_properties[b"long"] == 2**40  # the others decoded (a dead letter's reason too)
    assert b"application property 'amount': ValueError" in message.application_properties[PROP_UNDECODABLE.encode()]
    as_sent = amqp_types.as_sent(message.application_properties)
    assert as_sent is not None and PROP_UNDECODABLE.encode() not in as_sent
    assert typed(copied(dict(as_sent))) == typed(sent)


def test_a_message_without_properties_is_not_searched_for_their_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most messages carry no application properties: their decode skips the look for an encoded map."""
    def searched(buffer: memoryview) -> None:
        raise AssertionError("searched for the properties' map")

    monkeypatch.setattr(amqp_types, "properties_map", searched)
    plain = received(bytes(proton.Message(body=b"{}", inferred=True, subject="start").encode()))
    assert plain.application_properties is None and plain.properties.subject == b"start"
    assert amqp_types.as_sent(plain.application_properties) is None
    with pytest.raises(AssertionError, match="searched"):
        received(encode({"n": 1}))


def test_messages_properties_gives_str_keys_and_the_encodings() -> None:
    message = ServiceBusMessage(b"{}")
    message.raw_amqp_message.application_properties = received(encode({"n": 2**40})).application_properties
    props = messages.properties(message)  # type: ignore[arg-type]
    assert list(props) == ["n"] and messages.uncopyable(props) is None
    assert typed(copied(props)) == {"n": (int, 2**40)}


def test_without_the_patch_a_wide_integer_is_named_as_uncopyable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(patches._installed, patches.SERVICEBUS,
                        [n for n in patches.install(patches.SERVICEBUS) if n != amqp_types.TYPED_PROPERTIES])
    message = ServiceBusMessage(b"{}")
    message.raw_amqp_message.application_properties = received(encode({"ok": 5, "n": -(2**40)})).application_properties
    props = messages.properties(message)  # type: ignore[arg-type]
    assert props == {"ok": 5, "n": -(2**40)}
    assert "'n' is an integer past 32 bits" in (messages.uncopyable(props) or "")


def test_a_map_with_a_key_that_is_no_string_is_left_to_the_sdk() -> None:
    data = proton.Data()
    data.put_map()
    data.enter()
    data.put_int(1)
    data.put_string("x")
    data.exit()
    section = b"\x00\x53\x74" + bytes(data.encode())
    assert amqp_decoding.property_encodings(memoryview(section)) is None
    assert amqp_decoding.property_encodings(memoryview(encode({}))) in (None, {})


def test_every_sdk_path_that_decodes_messages_keeps_the_encodings() -> None:
    """The receive links and the management replies (peek: `sbworker dlq`, the dashboard's dead-letter page)."""
    for module in amqp_decoding.decoder_modules():
        message = module.decode_payload(memoryview(encode({"n": proton.ushort(1)})))
        assert amqp_types.as_sent(message.application_properties) is not None, module.__name__
