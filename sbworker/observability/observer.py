"""The one interface the service path reports through: `Observer`, and `MessageTrace` for one message.

Both base classes record nothing: they are what the listener holds when telemetry is off, so the hot path makes
empty method calls and never asks whether telemetry is on. `Telemetry.observer` builds the recording ones
(metrics through sbworker/observability/metrics.py, spans through sbworker/observability/tracing.py, which alone
imports the OpenTelemetry SDK's tracing).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

from sbworker.observability.metrics import NOOP, Metrics

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusReceivedMessage

    from sbworker.core.cloudevents import CloudEvent


# Entered once per message when there is no span: one shared, reusable context manager instead of a generator's.
_NOTHING: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


class MessageTrace:
    """One received message's span. This base is no span at all."""

    trace_id: str | None = None  # 32 hex digits while a span exists: a dead-letter description names it

    def current(self) -> contextlib.AbstractContextManager[None]:
        """Make the span the parent of what runs inside (the DTS SDK's spans among them)."""
        return _NOTHING

    def request(self, orchestration: str | None, instance_id: str | None) -> None:
        """What the message asked for, once parsed."""

    def cloudevent(self, event: CloudEvent) -> None:
        """The CloudEvent the message carried (its attributes, as the CloudEvents conventions name them)."""

    def settled(self, action: str, reason: str) -> None:
        """How it was settled; ends the span."""

    def unsettled(self, error: str) -> None:
        """Settling failed (Service Bus redelivers it); ends the span."""

    def inject(self, properties: dict[str | bytes, Any]) -> None:
        """Write the trace context into a re-enqueued copy's properties, so its span joins this trace."""


NO_TRACE = MessageTrace()


class Tracer(Protocol):
    """What makes a message's trace (tracing.MessageTracer, which builds on this module, not the other way)."""

    def trace(self, message: ServiceBusReceivedMessage) -> MessageTrace: ...


class Observer:
    """What one listener reports: each message's trace and settlement, and the metrics' other hooks."""

    def __init__(self, metrics: Metrics = NOOP, tracer: Tracer | None = None) -> None:
        self.metrics = metrics
        self._tracer = tracer

    def message(self, message: ServiceBusReceivedMessage) -> MessageTrace:
        """The trace of one received message (no span unless a tracer is configured)."""
        return NO_TRACE if self._tracer is None else self._tracer.trace(message)

    def settled(self, trace: MessageTrace, action: str, reason: str, seconds: float) -> None:
        """A message left our hands: `action` is complete, dead_letter, abandon or reenqueue."""
        self.metrics.settled(action, reason, seconds)
        trace.settled(action, reason)


NO_OBSERVER = Observer()
