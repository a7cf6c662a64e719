"""The dashboard's side of issue 25: a CloudEvent's attributes on the instance page, and the raise form: a select of
the events the instance's orchestration declares, its data checked by the listener's rules before it is sent through
the queue."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import quote

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from sbworker.core.entities import queue_source
from sbworker.operations import publish
from tests.dashboard.conftest import Stack, Web, finished
from tests.support.wait import until


def _queue(stack: Stack) -> str:
    return stack.settings.servicebus.source.entity.path


def test_a_cloudevent_start_shows_its_source_subject_and_time(stack: Stack, sb: ServiceBusClient,
                                                             dts: DurableTaskSchedulerClient, web: Web,
                                                             run_id: str) -> None:
    event_id = f"{run_id}-ce"
    envelope = {"specversion": "1.0", "id": event_id, "source": "/shop/<checkout>", "type": "sbworker.start",
                "subject": "order-77", "time": "2026-12-06T09:00:00+01:00", "data": {"orchestration": "hello_cities"}}
    publish.send(sb, queue_source(_queue(stack)), ServiceBusMessage(
        json.dumps(envelope), content_type="application/cloudevents+json", message_id=f"{run_id}-sb"))
    finished(dts, event_id)
    page = web.get(f"/instance?id={quote(event_id)}")
    shown = re.search(r'<dd id="cloudevent">(.*?)</dd>', page.text, re.S)
    assert shown is not None, page.text
    text = re.sub(r"<[^>]+>", "", shown.group(1))
    assert "source /shop/&lt;checkout&gt;" in text and "subject order-77" in text
    assert "time 2026-12-06T08:00:00Z" in text and f"id {event_id}" in text and "type sbworker.start" in text
    assert re.search(rf'id="started-by">{run_id}-sb<', page.text)


def test_the_raise_form_offers_the_declared_events_and_sends_them_through_the_queue(
        stack: Stack, sb: ServiceBusClient, dts: DurableTaskSchedulerClient, web: Web, run_id: str) -> None:
    invoice = f"{run_id}-invoice"
    message, _ = publish.start_message("invoice_payment", {"invoice": "I-D", "amount_cents": 900, "currency": "EUR"},
                                       invoice)
    publish.send(sb, queue_source(_queue(stack)), message)
    until(lambda: "awaiting_payment" in (getattr(dts.get_orchestration_state(invoice), "serialized_custom_status",
                                                    None) or ""), what="the invoice waiting for a payment")
    page = web.get(f"/instance?id={quote(invoice)}")
    form = re.search(r'<form[^>]*id="raise-form">.*?</form>', page.text, re.S)
    assert form is not None
    assert re.findall(r'<option value="([^"]+)"', form.group(0)) == ["PaymentReceived"]
    assert "psp-7781" in unescape(form.group(0))  # the schema's example as the placeholder
    refused = web.post("/instance/raise", {"id": invoice, "event_name": "PaymentReceived",
                                           "event_data": '{"amount_cents": "9", "currency": "EUR", "reference": "r"}'})
    assert refused.notice() == ('Not sent: $.data.amount_cents: expected integer, got string "9" '
                                "(SchemaViolation).")
    sent = web.post("/instance/raise", {"id": invoice, "event_name": "PaymentReceived",
                                        "event_data": '{"amount_cents": 900, "currency": "EUR", "reference": "web"}'})
    assert sent.notice().startswith("Event PaymentReceived sent through queue 'workflow-requests' as message ")
    assert json.loads(finished(dts, invoice).serialized_output or "null")["payments"] == ["web"]


def test_an_orchestration_that_declares_no_event_has_no_raise_form(stack: Stack, sb: ServiceBusClient,
                                                                   dts: DurableTaskSchedulerClient, web: Web,
                                                                   run_id: str) -> None:
    instance_id = f"{run_id}-later"
    later = datetime.now(UTC) + timedelta(hours=1)  # PENDING, so running but never waiting for an event
    message, _ = publish.start_message("hello_cities", None, instance_id, later)
    publish.send(sb, queue_source(_queue(stack)), message)
    until(lambda: dts.get_orchestration_state(instance_id), what="the scheduled instance")
    page = web.get(f"/instance?id={quote(instance_id)}")
    assert 'id="actions"' in page.text and 'id="raise-form"' not in page.text
    refused = web.post("/instance/raise", {"id": instance_id, "event_name": "PaymentReceived", "event_data": "{}"})
    assert refused.notice() == "Not sent: hello_cities waits for no declared event, not 'PaymentReceived'."
