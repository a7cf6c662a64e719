"""Trace continuation from a CloudEvent's distributed-tracing extension, in both content modes, through the real
listener, localbus and localdts: the listener's span joins the trace the event started, and carries the event's
attributes as the CloudEvents conventions name them. A transport `traceparent` (the last hop) wins over the
extension's."""

from __future__ import annotations

import json
import uuid
from typing import Any

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from localbus import LocalBus
from localdts import LocalDts
from tests.support.wait import eventually
from tests.telemetry import support
from tests.telemetry.test_traces import QUEUE, one, parent_of, traceparent


async def publish(bus: LocalBus, mode: str, header: str, *, transport: str | None = None) -> str:
    event_id = f"ce-{uuid.uuid4().hex}"
    attrs = {"specversion": "1.0", "id": event_id, "source": "/tests", "type": "sbworker.start",
             "subject": "traced", "traceparent": header}
    data = {"orchestration": "hello_cities"}
    properties: dict[str | bytes, Any] = {"traceparent": transport} if transport else {}
    if mode == "structured":
        message = ServiceBusMessage(json.dumps({**attrs, "data": data}), message_id=uuid.uuid4().hex,
                                    content_type="application/cloudevents+json", application_properties=properties)
    else:
        properties.update({f"cloudEvents_{k}": v for k, v in attrs.items()})
        message = ServiceBusMessage(json.dumps(data), message_id=uuid.uuid4().hex, content_type="application/json",
                                    application_properties=properties)
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_queue_sender(QUEUE) as sender:
        await sender.send_messages(message)
    return event_id


async def test_the_extension_traceparent_continues_the_trace_unless_the_transport_has_one(
        localbus: LocalBus, dts: LocalDts, span_exporter: InMemorySpanExporter) -> None:
    """One service run, three messages: the extension's trace continued in structured and in binary mode, and a
    transport traceparent (the last hop) winning over the extension's."""
    origins = {mode: traceparent() for mode in ("structured", "binary")}
    origin_header, origin_trace, _ = traceparent()
    hop_header, hop_trace, hop_span = traceparent()
    async with support.running(support.settings(localbus, dts), support.tracing_only()):
        event_ids = {mode: await publish(localbus, mode, header) for mode, (header, _, _) in origins.items()}
        await publish(localbus, "structured", origin_header, transport=hop_header)
        await eventually(lambda: all(
            any(s.name == "orchestration:hello_cities" for s in support.in_trace(span_exporter, trace_id))
            for _, trace_id, _ in [*origins.values(), (None, hop_trace, None)]),
            what="each orchestration in its trace")
    for mode, (_, trace_id, origin) in origins.items():
        spans = support.in_trace(span_exporter, trace_id)
        consumer = one(spans, f"process {QUEUE}")
        assert parent_of(consumer) == origin, (mode, support.tree(spans))
        attributes = dict(consumer.attributes or {})
        assert attributes["cloudevents.event_id"] == event_ids[mode] == attributes["sbworker.instance_id"]
        assert (attributes["cloudevents.event_source"], attributes["cloudevents.event_type"],
                attributes["cloudevents.event_subject"], attributes["cloudevents.event_spec_version"]) == (
            "/tests", "sbworker.start", "traced", "1.0")
    assert parent_of(one(support.in_trace(span_exporter, hop_trace), f"process {QUEUE}")) == hop_span
    assert not support.in_trace(span_exporter, origin_trace)
