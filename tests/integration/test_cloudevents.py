"""CloudEvents through localbus, in both content modes, with the real azure-servicebus SDK as the publisher and the
real listener and durabletask SDK behind it: starts (tagged with the event's attributes), approvals and declared
events, an early event re-enqueued with its envelope, a publisher's retry of the same event id, and broken envelopes
dead-lettered with their reason and description, body and properties intact. (Events published by the JavaScript
SDK: tests/interop/test_js_cloudevents.py.)"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusSubQueue
from durabletask.history import ExecutionStartedEvent

from localbus import LocalBus
from sbworker.core.codes import TAG_MESSAGE_ID
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend
from tests.fixtures.localbus import queue_bus
from tests.integration.harness import QUEUE, Harness, listener_settings
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("dts_worker")

STRUCTURED = "application/cloudevents+json; charset=utf-8"
SETTINGS: dict[str, Any] = {"LockDuration": "PT30S", "MaxDeliveryCount": 10}


@pytest.fixture
def bus(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalBus]:
    with queue_bus(request.config, {QUEUE: SETTINGS}, data_path=tmp_path / "bus.sqlite3") as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    async with Harness(bus, dts_backend.settings, listener_settings=listener_settings(
            approval_not_found_window_seconds=30.0)) as harness:
        yield harness


async def publish(h: Harness, mode: str, event_type: str, data: Any, *, event_id: str | None = None,
                  **attributes: Any) -> tuple[str, str]:
    """Send one CloudEvent the way a CloudEvents publisher would; returns (event id, Service Bus message id)."""
    event_id = event_id or f"ce-{uuid.uuid4().hex}"
    attrs = {"specversion": "1.0", "id": event_id, "source": "/tests/orders", "type": event_type, **attributes}
    if mode == "structured":
        envelope = {**attrs, "datacontenttype": "application/json", "data": data}
        mid = await h.send(None, raw=json.dumps(envelope, default=str).encode(), subject=None,
                           content_type=STRUCTURED)
    else:
        mid = await h.send(data, subject=None, content_type="application/json",
                           application_properties={f"cloudEvents_{k}": v for k, v in attrs.items()})
    return event_id, mid


MODES = ["structured", "binary"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_start_takes_the_event_id_as_instance_id_and_keeps_its_attributes_as_tags(h: Harness,
                                                                                           mode: str) -> None:
    when = datetime(2026, 12, 6, 8, 30, tzinfo=UTC)
    event_id, mid = await publish(h, mode, "sbworker.start", {"orchestration": "hello_cities"}, subject="order-42",
                                  time=when if mode == "binary" else "2026-12-06T09:30:00+01:00")
    assert await h.wait_for_output(event_id) == "Hello Tokyo!, Hello Seattle!, Hello London!"
    assert h.dts is not None
    [started] = [e for e in await h.dts.get_orchestration_history(event_id) if isinstance(e, ExecutionStartedEvent)]
    assert started.tags == {TAG_MESSAGE_ID: mid, "cloudevents.id": event_id, "cloudevents.source": "/tests/orders",
                            "cloudevents.type": "sbworker.start", "cloudevents.subject": "order-42",
                            "cloudevents.time": "2026-12-06T08:30:00Z"}
    await h.queue_drained()


@pytest.mark.parametrize("mode", MODES)
async def test_an_approval_and_a_declared_event_are_raised(h: Harness, mode: str) -> None:
    order = f"order-{uuid.uuid4().hex}"
    invoice = f"invoice-{uuid.uuid4().hex}"
    await h.start("approval_workflow", {"item": "x"}, instance_id=order)
    await h.start("invoice_payment", {"invoice": "I-1", "amount_cents": 700, "currency": "EUR"}, instance_id=invoice)
    await h.wait_for_state(order, lambda s: "awaiting_approval" in (s.serialized_custom_status or ""))
    await h.wait_for_state(invoice, lambda s: "awaiting_payment" in (s.serialized_custom_status or ""))
    await publish(h, mode, "sbworker.approval", {"instance_id": order, "approved": True, "approver": "ce-ada"})
    payment_id, _ = await publish(h, mode, "sbworker.event", {
        "instance_id": invoice, "name": "PaymentReceived",
        "data": {"amount_cents": 700, "currency": "EUR", "reference": "psp-ce"}})
    assert await h.wait_for_output(order) == "Approved"
    assert (await h.wait_for_output(invoice))["payments"] == ["psp-ce"]
    assert h.dts is not None
    raised = [json.loads(e.input) for e in await h.dts.get_orchestration_history(invoice)
              if getattr(e, "name", None) == "PaymentReceived"]
    assert [r["message_id"] for r in raised] == [payment_id]  # the CloudEvents id is the idempotency key
    await h.queue_drained()


async def test_an_early_binary_event_is_reenqueued_with_its_envelope(h: Harness) -> None:
    order = f"early-{uuid.uuid4().hex}"
    await publish(h, "binary", "sbworker.approval", {"instance_id": order, "approved": False, "approver": "early"},
                  time=datetime.now(UTC))

    async def reenqueued() -> bool:
        return any(m.application_properties and m.application_properties.get(b"sbworker-retries")
                   for m in await h.peek_queue())

    await eventually(reenqueued, what="the early approval re-enqueued")
    await h.start("approval_workflow", {"item": "x"}, instance_id=order)
    assert await h.wait_for_output(order, timeout=30) == "Rejected"
    await h.queue_drained(timeout=30)
    assert await h.peek_queue(sub_queue=ServiceBusSubQueue.DEAD_LETTER) == []


async def test_a_publisher_retry_of_the_same_event_id_starts_one_instance(h: Harness) -> None:
    event_id = f"retry-{uuid.uuid4().hex}"
    await publish(h, "structured", "sbworker.start", {"orchestration": "approval_workflow"}, event_id=event_id)
    await publish(h, "binary", "sbworker.start", {"orchestration": "approval_workflow", "input": {"n": 2}},
                  event_id=event_id)
    await h.queue_drained()
    state = await h.wait_for_state(event_id, lambda s: "awaiting_approval" in (s.serialized_custom_status or ""))
    assert state.serialized_input in (None, "null", '{"n": 2}')
    assert await h.peek_queue(sub_queue=ServiceBusSubQueue.DEAD_LETTER) == []


BROKEN: list[tuple[str, dict[str, Any], str, str]] = [
    ("structured", {"specversion": "1.0", "source": "/s", "type": "sbworker.start", "data": {}},
     "InvalidCloudEvent", "required attribute(s) id missing"),
    ("structured", {"specversion": "0.3", "id": "x", "source": "/s", "type": "sbworker.start", "data": {}},
     "InvalidCloudEvent", 'specversion "0.3" is not supported'),
    ("structured", {"specversion": "1.0", "id": "x", "source": "/s", "type": "sbworker.start",
                    "datacontenttype": "application/json", "data_base64": "e30="},
     "InvalidCloudEvent", "data_base64 with a JSON datacontenttype"),
    ("structured", {"specversion": "1.0", "id": "x", "source": "/s", "type": "com.example.unmapped", "data": {}},
     "UnknownSubject", "com.example.unmapped"),
    ("binary", {"cloudEvents_specversion": "1.0", "cloudEvents_id": "x", "cloudEvents_type": "sbworker.start"},
     "InvalidCloudEvent", "required attribute(s) source missing"),
    ("binary", {"cloudEvents_specversion": "1.0", "cloudEvents_id": "x", "cloudEvents:source": "/s",
                "cloudEvents_type": "sbworker.start"}, "InvalidCloudEvent", "prefixes are mixed"),
]


async def test_broken_envelopes_are_dead_lettered_and_nothing_is_lost(h: Harness) -> None:
    """All of them at once (each its own message): a reason, a description naming the problem, the original body and
    properties kept for a fix and a resubmit."""
    sent: dict[str, tuple[str, str, str, bytes, dict[str, Any]]] = {}
    for mode, envelope, reason, named in BROKEN:
        if mode == "structured":
            raw, properties = json.dumps(envelope).encode(), {}
            mid = await h.send(None, raw=raw, subject="start", content_type=STRUCTURED)
        else:
            raw, properties = json.dumps({"orchestration": "hello_cities"}).encode(), envelope
            mid = await h.send(None, raw=raw, subject="start", application_properties=envelope)
        sent[mid] = (mode, reason, named, raw, properties)
    dead = {str(m.message_id): m for m in await h.dead_letters(len(BROKEN))}
    assert set(dead) == set(sent)
    for mid, (mode, reason, named, raw, properties) in sent.items():
        message = dead[mid]
        assert text(message.dead_letter_reason) == reason, (mode, named)
        assert named in (text(message.dead_letter_error_description) or "")
        assert b"".join(message.body) == raw
        kept = {text(k): text(v) for k, v in (message.application_properties or {}).items()}
        assert properties.items() <= kept.items()
    await h.queue_drained()
