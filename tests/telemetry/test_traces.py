"""One trace from the publisher's span to the worker's activities, through the real listener, localbus and localdts.

Each test publishes with a `traceparent` it made up (a publisher's span that is not exported here) and reads back,
in that one trace, the spans exported in memory by the listener and by the durabletask SDK (client and worker).
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from localbus import LocalBus
from localdts import LocalDts
from tests.support.wait import eventually
from tests.telemetry import support

QUEUE = "workflow-requests"


def traceparent() -> tuple[str, int, int]:
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return f"00-{trace_id:032x}-{span_id:016x}-01", trace_id, span_id


async def send(bus: LocalBus, body: dict[str, Any], subject: str, properties: dict[str | bytes, Any]) -> str:
    message_id = uuid.uuid4().hex
    async with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_queue_sender(QUEUE) as sender:
        await sender.send_messages(ServiceBusMessage(json.dumps(body), subject=subject, message_id=message_id,
                                                     content_type="application/json",
                                                     application_properties=properties))
    return message_id


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in:\n{support.tree(spans)}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_a_start_message_and_its_orchestration_form_one_trace(localbus: LocalBus, dts: LocalDts,
        span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter
    header, trace_id, publisher_span = traceparent()
    async with support.running(support.settings(localbus, dts), support.tracing_only()):
        message_id = await send(localbus, {"orchestration": "hello_cities"}, "start", {"traceparent": header})
        await eventually(
            lambda: sum(s.name == "activity:say_hello" for s in support.in_trace(exporter, trace_id)) == 6
            and any(s.name == "orchestration:hello_cities" for s in support.in_trace(exporter, trace_id)),
            what="the worker's spans in the publisher's trace")

    spans = support.in_trace(exporter, trace_id)
    consumer = one(spans, f"process {QUEUE}")
    create = one(spans, "create_orchestration:hello_cities")
    orchestration = one(spans, "orchestration:hello_cities")
    scheduled = [s for s in spans if s.name == "activity:say_hello" and s.kind == SpanKind.CLIENT]
    executed = [s for s in spans if s.name == "activity:say_hello" and s.kind == SpanKind.SERVER]
    tree = support.tree(spans)

    assert consumer.kind == SpanKind.CONSUMER and parent_of(consumer) == publisher_span, tree
    assert consumer.parent is not None and consumer.parent.is_remote
    assert parent_of(create) == span_id(consumer), tree
    assert parent_of(orchestration) == span_id(create), tree
    # The orchestration schedules each activity (CLIENT); the worker runs it (SERVER) under that span.
    assert [parent_of(a) for a in scheduled] == [span_id(orchestration)] * 3, tree
    assert sorted(parent_of(a) or 0 for a in executed) == sorted(span_id(a) for a in scheduled), tree
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.system"] == "servicebus"
    assert attributes["messaging.destination.name"] == QUEUE
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.id"] == message_id
    assert attributes["messaging.servicebus.message.delivery_count"] == 0
    assert attributes["sbworker.orchestration"] == "hello_cities"
    assert attributes["sbworker.instance_id"] == message_id
    assert attributes["messaging.servicebus.disposition_status"] == "complete"
    assert attributes["sbworker.settlement.reason"] == "started"
    assert consumer.status.status_code != StatusCode.ERROR


async def test_diagnostic_id_is_a_parent_too_and_a_dead_letter_names_its_trace(
        localbus: LocalBus, dts: LocalDts, span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter
    header, trace_id, publisher_span = traceparent()
    async with support.running(support.settings(localbus, dts), support.tracing_only()):
        message_id = await send(localbus, {"orchestration": "no_such_workflow"}, "start", {"Diagnostic-Id": header})
        await eventually(lambda: bool(support.in_trace(exporter, trace_id)), what="the consumer span")
        async with ServiceBusClient.from_connection_string(localbus.connection_string) as client, \
                client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = await dlq.peek_messages(max_message_count=50)

    consumer = one(support.in_trace(exporter, trace_id), f"process {QUEUE}")
    assert parent_of(consumer) == publisher_span
    assert consumer.status.status_code == StatusCode.ERROR
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.servicebus.disposition_status"] == "dead_letter"
    assert attributes["sbworker.settlement.reason"] == "UnknownOrchestration"
    mine = [m for m in dead if str(m.message_id) == message_id]
    assert len(mine) == 1
    assert f"(trace_id={trace_id:032x})" in str(mine[0].dead_letter_error_description)


async def test_an_early_approval_keeps_its_trace_through_every_reenqueue(localbus: LocalBus, dts: LocalDts,
        span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter
    header, trace_id, publisher_span = traceparent()
    instance_id = f"early-{uuid.uuid4().hex}"
    async with support.running(support.settings(localbus, dts), support.tracing_only()):
        await send(localbus, {"instance_id": instance_id, "approved": True, "approver": "ada"}, "approval",
                   {"traceparent": header})
        await eventually(
            lambda: any(dict(s.attributes or {}).get("sbworker.settlement.action") == "reenqueue"
                        for s in support.in_trace(exporter, trace_id)), what="the approval re-enqueued")
        await send(localbus, {"orchestration": "approval_workflow", "instance_id": instance_id}, "start", {})
        await eventually(
            lambda: any(dict(s.attributes or {}).get("sbworker.settlement.reason") == "raised"
                        for s in support.in_trace(exporter, trace_id)), what="the approval raised")

    spans = support.in_trace(exporter, trace_id)
    consumers = sorted((s for s in spans if s.name == f"process {QUEUE}"), key=lambda s: s.start_time or 0)
    assert len(consumers) >= 2, support.tree(spans)
    assert parent_of(consumers[0]) == publisher_span
    # Each copy's span is a child of the attempt that re-enqueued it.
    assert [parent_of(c) for c in consumers[1:]] == [span_id(c) for c in consumers[:-1]], support.tree(spans)
    raised = one(spans, "orchestration_event:ApprovalEvent")
    assert parent_of(raised) == span_id(consumers[-1])
