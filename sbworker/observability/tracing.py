"""Spans for Service Bus messages: the listener's CONSUMER span and the publisher's PRODUCER span.

The listener only builds spans through a `MessageTracer`, and it holds one only when an exporter is configured,
so with tracing off no span object exists on the hot path. Trace context crosses Service Bus in the message's
application properties, as azure-servicebus writes it: `traceparent` (W3C), or the older `Diagnostic-Id` that
holds the same value. Keys and values may arrive as bytes from AMQP publishers other than the SDKs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sbworker.core import cloudevents, messages
from sbworker.core.text import clip
from sbworker.observability.observer import MessageTrace

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

    from sbworker.core.cloudevents import CloudEvent

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
DIAGNOSTIC_ID = "Diagnostic-Id"
SCOPE = "sbworker"
# Publishers choose subjects and ids: a span attribute holds at most this much of one.
MAX_ATTRIBUTE_CHARS = 256

_PROPAGATOR = TraceContextTextMapPropagator()


def carrier(properties: Mapping[Any, Any] | None) -> dict[str, str]:
    """`traceparent` / `tracestate` from application properties (`Diagnostic-Id` when there is no traceparent)."""
    found: dict[str, str] = {}
    for key, value in (properties or {}).items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if not isinstance(name, str) or name.lower() not in (TRACEPARENT, TRACESTATE, DIAGNOSTIC_ID.lower()):
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if isinstance(text, str) and len(text) <= 512:
            found[name.lower()] = text
    diagnostic = found.pop(DIAGNOSTIC_ID.lower(), None)
    if TRACEPARENT not in found and diagnostic:
        found[TRACEPARENT] = diagnostic
    return found


def trace_id_hex(span: trace.Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


class MessageTracer:
    """Opens one CONSUMER span per received message, following the OpenTelemetry messaging conventions."""

    def __init__(self, tracer: trace.Tracer, queue: str, subscription: str | None = None) -> None:
        """`queue` is the queue or, with `subscription`, the topic (the conventions' destination name)."""
        self._tracer = tracer
        self._queue = queue
        self._subscription = subscription

    def start(self, message: ServiceBusReceivedMessage) -> trace.Span:
        """A span whose parent is the publisher's trace context, when the message carries one.

        The transport's context comes first (it names the last hop); without one, a CloudEvent's distributed-tracing
        extension (`traceparent` in the envelope or as `cloudEvents_traceparent`) continues the trace it started.
        """
        parent = _PROPAGATOR.extract(carrier(message.application_properties) or _cloudevent_carrier(message))
        attributes: dict[str, Any] = {
            "messaging.system": "servicebus",
            "messaging.destination.name": self._queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.operation": "process",  # the name before semantic conventions 1.26, still read by viewers
            "messaging.servicebus.message.delivery_count": int(message.delivery_count or 0),
        }
        if self._subscription is not None:
            attributes["messaging.destination.subscription.name"] = self._subscription
        if message.message_id is not None:
            attributes["messaging.message.id"] = clip(message.message_id, MAX_ATTRIBUTE_CHARS)
        if message.correlation_id is not None:
            attributes["messaging.message.conversation_id"] = clip(message.correlation_id, MAX_ATTRIBUTE_CHARS)
        if message.subject is not None:
            attributes["sbworker.subject"] = clip(message.subject, MAX_ATTRIBUTE_CHARS)
        return self._tracer.start_span(f"process {self._queue}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=attributes)

    def trace(self, message: ServiceBusReceivedMessage) -> SpanTrace:
        """The message's span, wrapped in the interface the service path reports through."""
        return SpanTrace(self.start(message))


class SpanTrace(MessageTrace):
    """One message's CONSUMER span (see Observer): attributes as the messaging conventions name them."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self.trace_id = trace_id_hex(span)

    @contextmanager
    def current(self) -> Iterator[None]:
        token = otel_context.attach(trace.set_span_in_context(self._span))
        try:
            yield
        finally:
            otel_context.detach(token)

    def request(self, orchestration: str | None, instance_id: str | None) -> None:
        if orchestration:
            self._span.set_attribute("sbworker.orchestration", orchestration)
        if instance_id:
            self._span.set_attribute("sbworker.instance_id", clip(instance_id, MAX_ATTRIBUTE_CHARS))

    def cloudevent(self, event: CloudEvent) -> None:
        span = self._span
        span.set_attribute("cloudevents.event_id", clip(event.id, MAX_ATTRIBUTE_CHARS))
        span.set_attribute("cloudevents.event_source", clip(event.source, MAX_ATTRIBUTE_CHARS))
        span.set_attribute("cloudevents.event_type", clip(event.type, MAX_ATTRIBUTE_CHARS))
        span.set_attribute("cloudevents.event_spec_version", cloudevents.SPECVERSION)
        if event.subject is not None:
            span.set_attribute("cloudevents.event_subject", clip(event.subject, MAX_ATTRIBUTE_CHARS))

    def settled(self, action: str, reason: str) -> None:
        """Record the settlement on the span and end it; a dead-letter or an abandon marks it as an error."""
        span = self._span
        disposition = "complete" if action == "reenqueue" else action
        span.set_attribute("messaging.servicebus.disposition_status", disposition)
        span.set_attribute("sbworker.settlement.action", action)
        span.set_attribute("sbworker.settlement.reason", clip(reason, MAX_ATTRIBUTE_CHARS))
        if action in ("dead_letter", "abandon"):
            span.set_status(Status(StatusCode.ERROR, f"{action}: {clip(reason, MAX_ATTRIBUTE_CHARS)}"))
        span.end()

    def unsettled(self, error: str) -> None:
        self._span.set_attribute("sbworker.settlement.action", "none")
        self._span.set_status(Status(StatusCode.ERROR, f"could not settle: {clip(error, MAX_ATTRIBUTE_CHARS)}"))
        self._span.end()

    def inject(self, properties: dict[str | bytes, Any]) -> None:
        # The copy's span becomes a child of this attempt's span: one trace from the publisher to the raise.
        inject(properties)


def _cloudevent_carrier(message: ServiceBusReceivedMessage) -> dict[str, str]:
    try:
        body: bytes | None = messages.body_bytes(message)
    except ValueError:
        body = None
    return cloudevents.trace_carrier(body, messages.text(message.content_type), message.application_properties)


def inject(properties: dict[str | bytes, Any]) -> None:
    """Write the current span's context into application properties (a re-enqueued copy, a published message).

    An older `Diagnostic-Id` is replaced too, so the two never disagree.
    """
    fresh: dict[str, str] = {}
    _PROPAGATOR.inject(fresh)
    if not fresh:
        return
    for key in [k for k in properties if (k.decode("utf-8", "replace") if isinstance(k, bytes) else k).lower()
                in (TRACEPARENT, TRACESTATE, DIAGNOSTIC_ID.lower())]:
        del properties[key]
    properties.update(fresh)
    properties[DIAGNOSTIC_ID] = fresh[TRACEPARENT]


@contextmanager
def producer_span(queue: str, message: ServiceBusMessage) -> Iterator[trace.Span]:
    """The publisher's PRODUCER span: its context goes into the message, so the listener's span is its child."""
    tracer = trace.get_tracer(SCOPE)
    with tracer.start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes={
        "messaging.system": "servicebus",
        "messaging.destination.name": queue,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.operation": "publish",
        "messaging.message.id": clip(message.message_id or "", MAX_ATTRIBUTE_CHARS),
    }) as span:
        properties: dict[str | bytes, Any] = dict(message.application_properties or {})
        inject(properties)
        message.application_properties = properties
        yield span
