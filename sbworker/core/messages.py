"""Reading a received Service Bus message, and copying it: shared by the listener and the dead-letter tools."""

from __future__ import annotations

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


def properties(message: ServiceBusReceivedMessage) -> dict[str | bytes, Any]:
    """Application properties with str keys and str (not bytes) string values."""
    return {text(key) or "": text(value) if isinstance(value, bytes) else value
            for key, value in (message.application_properties or {}).items()}


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
