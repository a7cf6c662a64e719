"""CloudEvents published by the official JavaScript SDK (@azure/service-bus), as a Node service would, taken by the
real listener from localbus: structured and binary starts (tagged with their attributes), a binary approval, a
structured declared event, and two broken envelopes dead-lettered with their bodies intact.

The node side is cloudevents.mjs (npm ci once, and the skip/fail rule without node: tests/fixtures/node.py).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from durabletask.history import ExecutionStartedEvent

from localbus import LocalBus
from sbworker.core.codes import TAG_MESSAGE_ID
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend
from tests.fixtures.node import node_with_packages
from tests.integration.harness import QUEUE, Harness

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("dts_worker")


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_packages(HERE, "the JavaScript interop tests")


@pytest.fixture
def bus() -> Iterator[LocalBus]:
    with LocalBus(port=0, config_path=None, queues={QUEUE: {"LockDuration": "PT30S"}}) as running:
        yield running


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    async with Harness(bus, dts_backend.settings) as harness:
        yield harness


def send_from_node(node_bin: str, bus: LocalBus, options: dict[str, object]) -> dict[str, str]:
    result = subprocess.run([node_bin, str(HERE / "cloudevents.mjs"), bus.connection_string, json.dumps(options)],
                            cwd=HERE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"cloudevents.mjs failed:\n{result.stdout}\n{result.stderr}"
    sent: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return sent


async def test_cloudevents_from_the_javascript_sdk(node: str, h: Harness, bus: LocalBus) -> None:
    run = uuid.uuid4().hex[:10]
    order, invoice = f"js-order-{run}", f"js-invoice-{run}"
    await h.start("approval_workflow", {"item": "x"}, instance_id=order)
    await h.start("invoice_payment", {"invoice": "I-JS", "amount_cents": 900, "currency": "EUR"}, instance_id=invoice)
    await h.wait_for_state(order, lambda s: "awaiting_approval" in (s.serialized_custom_status or ""))
    await h.wait_for_state(invoice, lambda s: "awaiting_payment" in (s.serialized_custom_status or ""))
    when = datetime(2026, 12, 6, 11, 15, 30, 250000, tzinfo=UTC)
    options = {"queue": QUEUE, "run": run, "orderId": order, "invoiceId": invoice,
               "structuredStartId": f"js-s-{run}", "binaryStartId": f"js-b-{run}",
               "timeMs": int(when.timestamp() * 1000),
               "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    sent = send_from_node(node, bus, options)

    assert await h.wait_for_output(f"js-s-{run}") == "Hello Tokyo!, Hello Seattle!, Hello London!"
    assert await h.wait_for_output(f"js-b-{run}") == ["Hello Lima!", "Hello Quito!"]
    assert await h.wait_for_output(order) == "Approved"
    assert (await h.wait_for_output(invoice))["payments"] == ["node-psp-1"]
    assert h.dts is not None
    tags = {}
    for instance in (f"js-s-{run}", f"js-b-{run}"):
        history = await h.dts.get_orchestration_history(instance)
        tags[instance] = next(e.tags for e in history if isinstance(e, ExecutionStartedEvent))
    assert tags[f"js-s-{run}"] == {TAG_MESSAGE_ID: sent["structuredStart"], "cloudevents.id": f"js-s-{run}",
                                   "cloudevents.source": "/node/orders", "cloudevents.type": "sbworker.start",
                                   "cloudevents.subject": "order-js", "cloudevents.time": "2026-12-06T10:00:00Z"}
    # A JavaScript Date in applicationProperties is an AMQP timestamp: the time comes through to the millisecond.
    assert tags[f"js-b-{run}"]["cloudevents.time"] == "2026-12-06T11:15:30.250000Z"

    dead = {str(m.message_id): m for m in await h.dead_letters(2)}
    assert set(dead) == {sent["missingSource"], sent["oldSpecversion"]}
    missing, old = dead[sent["missingSource"]], dead[sent["oldSpecversion"]]
    assert text(missing.dead_letter_reason) == text(old.dead_letter_reason) == "InvalidCloudEvent"
    assert "source missing" in (text(missing.dead_letter_error_description) or "")
    assert 'specversion "0.3"' in (text(old.dead_letter_error_description) or "")
    assert json.loads(b"".join(missing.body))["id"] == f"broken-1-{run}"  # the envelope, as the SDK sent it
    await h.queue_drained()
