"""One received message on its way through the service path: what each step needs, carried in one object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver

from sbworker.core.contract import Invalid, Request
from sbworker.observability.observer import NO_TRACE, MessageTrace


@dataclass
class Delivery:
    """A message, the receiver that holds its lock, its trace, and what the pipeline learnt about it so far."""

    message: ServiceBusReceivedMessage
    receiver: ServiceBusReceiver
    trace: MessageTrace = NO_TRACE
    # Read once: each read of a property of the SDK's message walks its AMQP properties again (2-3% of the
    # listener's CPU from a backlog went to reading the message id and subject four times each).
    message_id: Any = None
    subject: str | None = None
    started: float = field(default_factory=time.monotonic)  # for the handling-duration metric and log line
    parsed: Request | Invalid | None = None  # None until parsed (or if parsing raised)
