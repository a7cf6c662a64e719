"""Reading a received Service Bus message, and copying it: shared by the listener and the dead-letter tools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.amqp import AmqpMessageBodyType

from sbworker import patches


def text(value: Any) -> str | None:
    """The SDK hands some string fields back as bytes; normalise them."""
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def prop(message: ServiceBusReceivedMessage, key: str) -> Any:
    """One application property, whether the publisher's AMQP stack sent its key (and value) as str or bytes."""
    props = message.application_properties or {}
    value = props.get(key, props.get(key.encode()))
    return text(value) if isinstance(value, bytes) else value


def body_bytes(message: ServiceBusReceivedMessage) -> bytes:
    """AMQP data sections joined, or a string/bytes AMQP value; ValueError for any other body."""
    body_type = message.body_type
    if body_type == AmqpMessageBodyType.DATA:
        return b"".join(bytes(section) for section in message.body)
    value: Any = message.body
    if body_type == AmqpMessageBodyType.VALUE and isinstance(value, str):
        return value.encode("utf-8")
    if body_type == AmqpMessageBodyType.VALUE and isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ValueError(f"body must be AMQP data (or a string value), got an AMQP {body_type} of "
                     f"{type(value).__name__}")


# A CloudEvent's time in binary mode: the AMQP binding prefers an AMQP timestamp.
_TIMESTAMP_KEYS = frozenset({"cloudEvents_time", "cloudEvents:time"})
_INT32 = range(-(2**31), 2**31)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def properties(message: ServiceBusReceivedMessage) -> dict[str | bytes, Any]:
    """Application properties with str keys, ready to be sent again: each exactly as it arrived.

    azure-servicebus hands every integer width and a timestamp back as an int, and a string or binary as bytes,
    then sends every int as a 32-bit AMQP int and bytes as a string: a plain copy changes types, and one carrying
    a long or a timestamp past 32 bits cannot be sent at all. sbworker.patches keeps each received encoding for
    the copy. Without it (an unverified SDK) the decoded values are copied, and only a CloudEvents time is
    restored as the timestamp it was, since the contract itself expects one there; `uncopyable` then names a
    value that cannot be sent.
    """
    received = message.application_properties or {}
    as_sent = patches.properties_as_sent(received)
    if as_sent is not None:
        return {text(key) or "": value for key, value in as_sent.items()}
    found: dict[str | bytes, Any] = {}
    value: Any
    for key, value in received.items():
        name = text(key) or ""
        if name in _TIMESTAMP_KEYS and _integer(value) and value not in _INT32:
            value = _EPOCH + timedelta(milliseconds=value)  # exact, unlike a float of seconds
        found[name] = text(value) if isinstance(value, bytes) else value
    return found


def uncopyable(copied: dict[str | bytes, Any]) -> str | None:
    """Why the SDK cannot send these `properties` of a received message (None: it can). Only an integer past 32
    bits, and only without sbworker.patches: the SDK sends any int as a 32-bit AMQP int, and refuses a wider one."""
    for key, value in copied.items():
        if _integer(value) and value not in _INT32:
            return (f"its application property {text(key)!r} is an integer past 32 bits ({value}), which this "
                    f"azure-servicebus version cannot send again (sbworker.patches copies it only on a verified "
                    f"version)")
    return None


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def copy(message: ServiceBusReceivedMessage, *, body: bytes, application_properties: dict[str | bytes, Any]
         ) -> ServiceBusMessage:
    """A new message with the same id, subject, content type and correlation id (so idempotency carries over), in
    the same session (a session-enabled entity refuses a message without one)."""
    return ServiceBusMessage(
        body=body,
        subject=text(message.subject),
        content_type=text(message.content_type),
        message_id=str(message.message_id),
        correlation_id=text(message.correlation_id),
        session_id=text(message.session_id),
        application_properties=application_properties or None,
    )
