"""The SDK decoder's gaps, filled: the missing primitive types decode, and a section that still cannot be
decoded is reported in the properties instead of raised inside the receiver."""

from __future__ import annotations

import decimal
import inspect

import proton
import pytest
from azure.servicebus._pyamqp import _decode

from sbworker import patches
from sbworker.core.codes import PROP_UNDECODABLE
from sbworker.patches import amqp_decoding


def encode(message: proton.Message) -> bytes:
    return bytes(message.encode())


@pytest.mark.parametrize(("bits", "width", "expected"), [
    (0x32800001, 32, "1"), (0x31800007, 32, "0.07"), (0xB2800005, 32, "-5"),
    (0x31C0000000000001, 64, "1"), (0x318000000000007B, 64, "1.23"),
])
def test_bid_decimals_decode_to_their_value(bits: int, width: int, expected: str) -> None:
    decoder = amqp_decoding._decode_decimal32 if width == 32 else amqp_decoding._decode_decimal64
    rest, value = decoder(memoryview(bits.to_bytes(width // 8, "big") + b"!"))
    assert value == decimal.Decimal(expected) and bytes(rest) == b"!"


def test_char_decimal32_and_decimal64_properties_decode_once_installed() -> None:
    assert amqp_decoding.MISSING_TYPES in patches.install()
    payload = encode(proton.Message(body=b"{}", properties={
        "c": proton.char("é"), "d32": proton.decimal32(0x31800007), "d64": proton.decimal64(0x31C0000000000001)}))
    message = _decode.decode_payload(memoryview(payload))
    assert message.application_properties == {b"c": "é", b"d32": decimal.Decimal("0.07"), b"d64": decimal.Decimal(1)}


def corrupted() -> bytes:
    """A start message whose application properties hold a byte that is no AMQP constructor at all."""
    payload = bytearray(encode(proton.Message(body=b"payload", inferred=True, subject="start", properties={"n": 7})))
    marker = bytes([0x00, 0x53, 0x74])  # the application-properties section
    at = payload.index(marker)
    value = payload.index(bytes([0x55, 0x07]), at)  # the smalllong 7
    payload[value] = 0x3F
    return bytes(payload)


def test_a_section_that_cannot_be_decoded_is_reported_and_the_rest_kept() -> None:
    payload = corrupted()
    original = inspect.unwrap(_decode.decode_payload)  # the SDK's own, under every patch's wrapper
    with pytest.raises(Exception):  # noqa: B017 - what the SDK raises here is an accident of its table
        original(memoryview(payload))
    message = amqp_decoding.tolerant(original)(memoryview(payload))
    assert message.properties.subject == b"start"
    assert b"".join(message.data) == b"payload"
    reason = message.application_properties[PROP_UNDECODABLE.encode()].decode()
    assert "application_properties" in reason and "cannot decode" in reason


def test_skip_value_walks_every_width_category() -> None:
    encoded = encode(proton.Message(body=["x", 1, {"k": 2.5}], properties={"a": proton.ulong(5)}))
    offset, sections = 0, 0
    while offset < len(encoded):
        offset = amqp_decoding.skip_value(memoryview(encoded), offset)
        sections += 1
    assert offset == len(encoded) and sections >= 2


def test_both_sdk_receivers_decode_through_the_tolerant_decoder_once_installed() -> None:
    """What the sync and aio receive links call (not only `_decode`) must be the tolerant decoder."""
    from azure.servicebus._pyamqp import receiver
    from azure.servicebus._pyamqp.aio import _receiver_async

    assert amqp_decoding.TOLERANT in patches.install()
    for module in (receiver, _receiver_async):
        message = module.decode_payload(memoryview(corrupted()))  # type: ignore[attr-defined]
        assert PROP_UNDECODABLE.encode() in message.application_properties
