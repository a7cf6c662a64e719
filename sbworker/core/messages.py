"""Reading a received Service Bus message, and copying it: shared by the listener and the dead-letter tools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.amqp import AmqpMessageBodyType


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
    """Application properties with str keys and str (not bytes) string values, ready to be sent again.

    azure-servicebus hands an AMQP timestamp back as epoch milliseconds (an int) and sends any int as a 32-bit AMQP
    int, so a CloudEvents time would not fit in a copy: it goes back as the timestamp it was.
    """
    found: dict[str | bytes, Any] = {}
    value: Any
    for key, value in (message.application_properties or {}).items():
        name = text(key) or ""
        if name in _TIMESTAMP_KEYS and isinstance(value, int) and not isinstance(value, bool) and value not in _INT32:
            value = _EPOCH + timedelta(milliseconds=value)  # exact, unlike a float of seconds
        found[name] = text(value) if isinstance(value, bytes) else value
    return found


def copy(message: ServiceBusReceivedMessage, *, body: bytes, application_properties: dict[str | bytes, Any]
         ) -> ServiceBusMessage:
    """A new message with the same id, subject, content type and correlation id (so idempotency carries over)."""
    return ServiceBusMessage(
        body=body,
        subject=text(message.subject),
        content_type=text(message.content_type),
        message_id=str(message.message_id),
        correlation_id=text(message.correlation_id),
        application_properties=application_properties or None,
    )
