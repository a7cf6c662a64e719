"""The dashboard's side of issue 25: a CloudEvent's attributes on the instance page (the raise form's declared
events are tested here too)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from sbworker.core.entities import queue_source
from sbworker.operations import publish
from tests.dashboard.conftest import Stack, Web, finished


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
