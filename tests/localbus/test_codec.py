"""Raw AMQP section handling: messages pass through with full fidelity, batches are recognised."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proton import Message, symbol, timestamp

from localbus import codec


def _encode(message: Message) -> bytes:
    return bytes(message.encode())


def _decode(raw: bytes) -> Message:
    message = Message()
    message.decode(raw)
    return message


app_values = st.one_of(st.text(max_size=40), st.integers(-(2**62), 2**62), st.booleans(), st.binary(max_size=40))


@given(body=st.binary(max_size=2000), props=st.dictionaries(st.text(min_size=1, max_size=20), app_values, max_size=5),
       message_id=st.one_of(st.none(), st.text(min_size=1, max_size=30)), count=st.integers(0, 1000))
def test_wire_preserves_body_properties_and_sets_delivery_count(body: bytes, props: dict[str, object],
                                                                 message_id: str | None, count: int) -> None:
    original = Message(body=body, id=message_id, properties=props or None, subject="s", inferred=True)
    stored = codec.parse_message(_encode(original))
    seq = codec.enc_symbol(b"x-opt-sequence-number") + codec.enc_long(42)
    out = _decode(stored.wire(count, [seq]))
    assert bytes(out.body) == body
    assert out.delivery_count == count
    assert out.subject == "s"
    assert out.id == message_id
    assert (out.properties or {}) == props
    assert out.annotations[symbol("x-opt-sequence-number")] == 42
    assert stored.message_id == message_id


def test_broker_annotations_from_clients_are_replaced() -> None:
    sent = Message(body=b"x", inferred=True, annotations={
        symbol("x-opt-sequence-number"): 999, symbol("x-opt-partition-key"): "pk",
        symbol("x-opt-scheduled-enqueue-time"): timestamp(1_700_000_000_000)})
    stored = codec.parse_message(_encode(sent))
    assert stored.scheduled_ms == 1_700_000_000_000
    out = _decode(stored.wire(0, []))
    assert symbol("x-opt-sequence-number") not in out.annotations
    assert out.annotations[symbol("x-opt-partition-key")] == "pk"


def test_dead_letter_properties_are_added_and_replaced() -> None:
    stored = codec.parse_message(_encode(Message(body="v", properties={"keep": 1, "DeadLetterReason": "old"})))
    updated = stored.with_application_properties({"DeadLetterReason": "new", "DeadLetterErrorDescription": "why"})
    assert _decode(updated.wire(0, [])).properties == {
        "keep": 1, "DeadLetterReason": "new", "DeadLetterErrorDescription": "why"}
    assert _decode(stored.wire(0, [])).properties["DeadLetterReason"] == "old"


def _batch(messages: list[bytes]) -> bytes:
    """An SDK-style batch envelope: properties, then one data section per encoded message."""
    envelope = bytes(Message(id="first").encode())  # no body: proton writes header and properties only
    assert b"\x00\x53\x77" not in envelope
    for raw in messages:
        envelope += b"\x00\x53\x75\xb0" + len(raw).to_bytes(4, "big") + raw
    return envelope


def test_split_batch_recognises_envelopes() -> None:
    inner = [_encode(Message(body=f"m{i}".encode(), id=str(uuid.uuid4()), inferred=True)) for i in range(3)]
    assert codec.split_batch(_batch(inner)) == inner


@given(body=st.binary(max_size=300))
def test_ordinary_binary_bodies_are_not_batches(body: bytes) -> None:
    assert codec.split_batch(_encode(Message(body=body, inferred=True))) is None


@pytest.mark.parametrize("raw", [b"", b"\x01\x02", b"\x00\x53\x75\xa0\x10abc", b"\x00\x53\x99\x45"])
def test_malformed_messages_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.parse_message(raw)
