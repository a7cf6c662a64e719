"""The typed publisher for application code, sync and async, against localbus with the real listener behind it: what
it sends runs (plain and as CloudEvents in both modes), what the listener would dead-letter is refused before
anything is sent, and a traced publish returns the trace its PRODUCER span started (the listener continues any
`traceparent`: tests/telemetry)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from durabletask.history import ExecutionStartedEvent
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from localbus import LocalBus
from sbworker.core import config
from sbworker.core.contract import Rejected
from sbworker.operations.publisher import AsyncPublisher, Publisher
from tests.fixtures.dts import DtsBackend
from tests.fixtures.localbus import queue_bus
from tests.integration.harness import QUEUE, Harness, servicebus_settings

pytestmark = pytest.mark.usefixtures("dts_worker")

INVOICE = {"invoice": "I-P", "amount_cents": 300, "currency": "EUR"}
PAYMENT = {"amount_cents": 300, "currency": "EUR", "reference": "psp-pub"}


@pytest.fixture
def bus(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalBus]:
    with queue_bus(request.config, {QUEUE: {"LockDuration": "PT30S"}}, data_path=tmp_path / "bus.sqlite3") as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    async with Harness(bus, dts_backend.settings) as harness:
        yield harness


async def waiting(h: Harness, instance_id: str, stage: str) -> None:
    await h.wait_for_state(instance_id, lambda s: stage in (s.serialized_custom_status or ""))


async def test_the_sync_publisher_starts_approves_and_raises_events(h: Harness, bus: LocalBus) -> None:
    """Application code's thread: the sync client, used here off the event loop the listener runs on."""
    run = uuid.uuid4().hex[:8]
    client = ServiceBusClient.from_connection_string(bus.connection_string)
    with Publisher(client, queue=QUEUE, owns_client=True) as publisher:
        order = await asyncio.to_thread(publisher.start, "approval_workflow", {"item": "pen"},
                                        instance_id=f"order-{run}")
        invoice = await asyncio.to_thread(publisher.start, "invoice_payment", INVOICE)
        assert order.instance_id == f"order-{run}" and order.event_id is None and order.trace_id is None
        assert invoice.instance_id == invoice.message_id  # defaulted, as the listener defaults it
        await waiting(h, order.instance_id, "awaiting_approval")
        await waiting(h, invoice.instance_id, "awaiting_payment")
        await asyncio.to_thread(lambda: publisher.reject(order.instance_id, approver="ada", comment="too pricey"))
        paid = await asyncio.to_thread(publisher.raise_event, invoice.instance_id, "PaymentReceived", PAYMENT)
        assert paid.instance_id == invoice.instance_id
    assert await h.wait_for_output(order.instance_id) == "Rejected"
    assert (await h.wait_for_output(invoice.instance_id))["payments"] == ["psp-pub"]


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_the_async_publisher_sends_cloudevents(h: Harness, bus: LocalBus, mode: Any) -> None:
    client = AsyncServiceBusClient.from_connection_string(bus.connection_string)
    async with AsyncPublisher(client, queue=QUEUE, cloudevents=mode, source="/shop", owns_client=True) as publisher:
        started = await publisher.start("approval_workflow", {"item": "pen"})
        assert started.event_id == started.message_id == started.instance_id
        await waiting(h, started.instance_id, "awaiting_approval")
        await publisher.approve(started.instance_id, approver="grace")
    assert await h.wait_for_output(started.instance_id) == "Approved"
    assert h.dts is not None
    history = await h.dts.get_orchestration_history(started.instance_id)
    tags = next(e.tags for e in history if isinstance(e, ExecutionStartedEvent))
    assert (tags["cloudevents.source"], tags["cloudevents.type"], tags["cloudevents.id"]) == (
        "/shop", "sbworker.start", started.event_id)


@pytest.mark.parametrize(("call", "reason"), [
    (lambda p: p.start("say_hello"), "UnknownOrchestration"),
    (lambda p: p.raise_event("x", "Shipped", {}), "UnknownEvent"),
    (lambda p: p.raise_event("x", "PaymentReceived", {"amount_cents": 0, "currency": "EUR", "reference": "r"}),
     "SchemaViolation"),
    (lambda p: p.approve("i" * 101, approver="ada"), "InstanceIdTooLong"),
])
def test_what_the_listener_would_dead_letter_is_never_sent(bus: LocalBus, call: Any, reason: str) -> None:
    before = bus.counts(QUEUE)["total"]
    with Publisher(ServiceBusClient.from_connection_string(bus.connection_string), queue=QUEUE,
                   owns_client=True) as publisher, pytest.raises(Rejected) as refused:
        call(publisher)
    assert refused.value.reason == reason
    assert bus.counts(QUEUE)["total"] == before
    assert bus.counts(f"{QUEUE}/$DeadLetterQueue")["total"] == 0


async def test_from_settings_uses_the_service_configuration_and_traced_sends_in_a_producer_span(
        h: Harness, bus: LocalBus, dts_backend: DtsBackend, span_exporter: InMemorySpanExporter) -> None:
    settings = config.Settings(dts=dts_backend.settings, servicebus=servicebus_settings(bus),
                               listener=h.listener_settings)
    async with AsyncPublisher.from_settings(settings, traced=True) as publisher:
        assert publisher.destination == QUEUE
        sent = await publisher.start("hello_cities")
    assert sent.trace_id is not None and len(sent.trace_id) == 32
    await h.wait_for_output(sent.instance_id)
    [producer] = [s for s in span_exporter.get_finished_spans() if s.name == f"send {QUEUE}"]
    assert producer.context is not None and format(producer.context.trace_id, "032x") == sent.trace_id
    assert await h.peek_queue(ServiceBusSubQueue.DEAD_LETTER) == []
