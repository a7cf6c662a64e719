"""Publishing start and approval messages that follow the contract (what `sbworker publish` sends)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from orchestrations import registry
from sbworker.core import contract
from sbworker.core.entities import Source
from sbworker.core.limits import DEFAULT_LIMITS, Limits

CONTENT_TYPE = "application/json"


def start_message(orchestration: str, input: Any = None, instance_id: str | None = None,
                  start_at: datetime | None = None, message_id: str | None = None, *, bounds: Limits = DEFAULT_LIMITS
                  ) -> tuple[ServiceBusMessage, str]:
    """A contract-conforming start message and the instance id it will create.

    Raises ``ValueError`` (one line naming the limit) for what the listener would dead-letter: a message that
    breaks the schema or a bound (instance id length, input size, the orchestration's own input bounds).
    """
    body = contract.start_body(orchestration, input=input, instance_id=instance_id, start_at=start_at,
                               bounds=bounds, input_problem=registry.input_problem)
    mid = message_id or uuid.uuid4().hex
    message = ServiceBusMessage(json.dumps(body), subject=contract.SUBJECT_START, content_type=CONTENT_TYPE,
                                message_id=mid)
    return message, instance_id or mid


def approval_message(instance_id: str, approved: bool, approver: str, comment: str | None = None,
                     message_id: str | None = None, *, bounds: Limits = DEFAULT_LIMITS) -> ServiceBusMessage:
    body = contract.approval_body(instance_id, approved, approver, comment, bounds=bounds)
    return ServiceBusMessage(json.dumps(body), subject=contract.SUBJECT_APPROVAL, content_type=CONTENT_TYPE,
                             message_id=message_id or uuid.uuid4().hex)


def send(client: ServiceBusClient, source: Source, message: ServiceBusMessage, *, traced: bool = False
         ) -> str | None:
    """Send `message` to the queue or topic; with `traced`, inside a PRODUCER span whose context the message
    carries (`traceparent`).

    Returns the trace id (32 hex digits) when traced, so the caller can print it.
    """
    if not traced:
        with source.sender(client) as sender:
            sender.send_messages(message)
        return None
    from sbworker.observability import tracing

    with tracing.producer_span(source.publish_to, message) as span, source.sender(client) as sender:
        sender.send_messages(message)
    return tracing.trace_id_hex(span)
