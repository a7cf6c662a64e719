"""The declared-event rows of the settlement table, through the real azure-servicebus SDK (against localbus) and the
real durabletask SDK, with the shipped example that waits for a second kind of event (invoice_payment).

Rows: raised (two partial payments settle an invoice), early (held and re-enqueued until its instance exists, in
the topic form's retry queue), late (instance finished), duplicate (redelivered after a crash between raise and
complete: completed, never raised twice), unknown (undeclared name; declared but not awaited by the instance), invalid
(data that breaks the event's schema). Outcomes are read from DTS and from the dead-letter queue.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusSubQueue

from listener.dispatch import Dispatcher, Outcome
from localbus import LocalBus
from sbworker.core.contract import Request
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend
from tests.fixtures.localbus import queue_bus
from tests.fixtures.target import external_servicebus
from tests.integration.harness import QUEUE, TOPIC_SOURCE, Harness, listener_settings, topic_entities
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("dts_worker")

SETTINGS: dict[str, Any] = {"LockDuration": "PT30S", "MaxDeliveryCount": 10}


@pytest.fixture
def bus(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalBus]:
    retry_queue, topics = topic_entities(SETTINGS)
    with queue_bus(request.config, {QUEUE: SETTINGS, **retry_queue}, data_path=tmp_path / "bus.sqlite3",
                   topics=topics) as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    async with Harness(bus, dts_backend.settings, listener_settings=listener_settings(
            approval_not_found_window_seconds=3.0)) as harness:
        yield harness


def invoice(amount: int = 10_000, **extra: Any) -> dict[str, Any]:
    return {"invoice": f"INV-{uuid.uuid4().hex[:8]}", "amount_cents": amount, "currency": "EUR", **extra}


async def pay(h: Harness, instance_id: str, cents: int, reference: str, **kw: Any) -> str:
    data = {"amount_cents": cents, "currency": "EUR", "reference": reference}
    return await h.send({"instance_id": instance_id, "name": "PaymentReceived", "data": data}, subject="event", **kw)


async def awaiting(h: Harness, instance_id: str, paid: int | None = None) -> dict[str, Any]:
    def ready(state: Any) -> bool:
        status = json.loads(state.serialized_custom_status or "{}")
        return status.get("stage") == "awaiting_payment" and (paid is None or status.get("paid_cents") == paid)

    state = await h.wait_for_state(instance_id, ready)
    return dict(json.loads(state.serialized_custom_status or "{}"))


async def raised_events(h: Harness, instance_id: str, name: str = "PaymentReceived") -> list[dict[str, Any]]:
    assert h.dts is not None
    history = await h.dts.get_orchestration_history(instance_id)
    return [json.loads(e.input) for e in history if getattr(e, "name", None) == name and getattr(e, "input", None)]


async def test_two_partial_payments_settle_the_invoice(h: Harness) -> None:
    iid = await h.start("invoice_payment", invoice(10_000))
    await awaiting(h, iid)
    first = await pay(h, iid, 4_000, "psp-1")
    await awaiting(h, iid, paid=4_000)
    await pay(h, iid, 6_000, "psp-2")
    output = await h.wait_for_output(iid)
    assert output["status"] == "Paid" and output["paid_cents"] == 10_000
    assert output["payments"] == ["psp-1", "psp-2"] and output["receipt"].startswith("R-INV-")
    # The listener tagged each raise with its message id: the idempotency key the workflow counts by.
    assert (await raised_events(h, iid))[0] == {"amount_cents": 4_000, "currency": "EUR", "reference": "psp-1",
                                                "message_id": first}
    await h.queue_drained()
    assert await h.peek_queue(sub_queue=ServiceBusSubQueue.DEAD_LETTER) == []


async def test_an_event_published_before_its_start_waits_for_the_instance(bus: LocalBus, dts_backend: DtsBackend,
                                                                           request: pytest.FixtureRequest) -> None:
    """In the topic form, where the copy waits in the worker's own retry queue (the queue form re-enqueues to the
    queue itself, as for approvals: tests/integration/test_listener.py)."""
    if external_servicebus(request.config):
        pytest.skip("the topic form's entities are made for localbus here")
    async with Harness(bus, dts_backend.settings, source=TOPIC_SOURCE, listener_settings=listener_settings(
            approval_not_found_window_seconds=30.0)) as h:
        iid = f"early-{uuid.uuid4().hex}"
        await pay(h, iid, 500, "psp-early")

        async def reenqueued() -> bool:  # the scheduled copy the listener left for itself
            return any(m.application_properties and m.application_properties.get(b"sbworker-retries")
                       for m in await h.peek_queue())

        await eventually(reenqueued, what="the early event re-enqueued")
        await h.start("invoice_payment", invoice(500), instance_id=iid)
        output = await h.wait_for_output(iid, timeout=30)
        assert output["status"] == "Paid" and output["payments"] == ["psp-early"]
        await h.queue_drained(timeout=30)


async def test_an_event_for_a_finished_instance_is_dead_lettered(h: Harness) -> None:
    iid = await h.start("invoice_payment", invoice(500))
    await awaiting(h, iid)
    await pay(h, iid, 500, "psp-1")
    assert (await h.wait_for_output(iid))["status"] == "Paid"
    late = await pay(h, iid, 500, "psp-late")
    [dead] = await h.dead_letters(1)
    assert (dead.message_id, text(dead.dead_letter_reason)) == (late, "InstanceNotRunning")
    assert text(dead.dead_letter_error_description) == (
        f"instance {iid!r} is COMPLETED; the event PaymentReceived came too late")


class CrashAfterRaise(Dispatcher):
    """The listener dying between the raise and the complete, once: the raise reaches the instance's history, then
    our own code fails, so the message is abandoned and comes back with delivery_count 1 (what a crash leaves)."""

    def __init__(self, inner: Dispatcher) -> None:
        self.inner = inner
        self.crashed = False
        self.redelivered: list[bool] = []

    async def dispatch(self, request: Request, message_id: str | None = None, **options: Any) -> Outcome:
        self.redelivered.append(bool(options.get("redelivered")))
        outcome = await self.inner.dispatch(request, message_id, **options)
        if not self.crashed and getattr(request, "event_name", None) == "PaymentReceived":
            self.crashed = True

            async def in_history() -> bool:
                events = await self.inner.client.get_orchestration_history(request.instance_id)
                return any(getattr(e, "name", None) == "PaymentReceived" for e in events)

            await eventually(in_history, what="the raised event in the history")
            raise RuntimeError("crash after the raise")
        return outcome


async def test_a_redelivered_event_is_completed_as_a_duplicate_and_never_raised_twice(
        bus: LocalBus, dts_backend: DtsBackend) -> None:
    crash: list[CrashAfterRaise] = []

    def wrap(inner: Dispatcher) -> Dispatcher:
        crash.append(CrashAfterRaise(inner))
        return crash[0]

    async with Harness(bus, dts_backend.settings, wrap_dispatcher=wrap) as h:
        iid = await h.start("invoice_payment", invoice(10_000))
        await awaiting(h, iid)
        mid = await pay(h, iid, 4_000, "psp-once")
        await h.queue_drained(timeout=30)
        assert crash[0].crashed and crash[0].redelivered[-1] is True  # it did come back as a redelivery
        status = await awaiting(h, iid, paid=4_000)  # still running: a second raise would have counted
        assert status["payments"] == ["psp-once"] and status["ignored"] == []
        assert [e["message_id"] for e in await raised_events(h, iid)] == [mid]
        assert await h.peek_queue(sub_queue=ServiceBusSubQueue.DEAD_LETTER) == []


async def test_the_workflow_counts_one_idempotency_key_once(h: Harness) -> None:
    """The window the listener cannot see (raised, not yet in the history): the workflow skips a key it counted."""
    iid = await h.start("invoice_payment", invoice(10_000))
    await awaiting(h, iid)
    assert h.dts is not None
    data = {"amount_cents": 4_000, "currency": "EUR", "reference": "psp-twice", "message_id": "m-1"}
    await h.dts.raise_orchestration_event(iid, "PaymentReceived", data=data)
    await h.dts.raise_orchestration_event(iid, "PaymentReceived", data=data)
    await h.dts.raise_orchestration_event(iid, "PaymentReceived", data={**data, "currency": "USD", "message_id": "m2"})

    def seen_three(state: Any) -> bool:
        return len(json.loads(state.serialized_custom_status or "{}").get("ignored", [])) == 2

    state = await h.wait_for_state(iid, seen_three)
    status = json.loads(state.serialized_custom_status or "{}")
    assert status["paid_cents"] == 4_000 and status["ignored"] == ["duplicate psp-twice", "psp-twice: USD, not EUR"]


@pytest.mark.parametrize(("body", "reason", "named"), [
    ({"name": "Shipped", "data": {}}, "UnknownEvent", "declared: ApprovalEvent, PaymentReceived"),
    ({"name": "PaymentReceived", "data": {"amount_cents": "1", "currency": "EUR", "reference": "r"}},
     "SchemaViolation", "$.data.amount_cents"),
])
async def test_an_undeclared_or_invalid_event_is_dead_lettered(h: Harness, body: dict[str, Any], reason: str,
                                                               named: str) -> None:
    mid = await h.send({"instance_id": "anything", **body}, subject="event")
    [dead] = await h.dead_letters(1)
    assert (dead.message_id, text(dead.dead_letter_reason)) == (mid, reason)
    assert named in (text(dead.dead_letter_error_description) or "")


async def test_an_event_the_instance_does_not_wait_for_is_dead_lettered(h: Harness) -> None:
    iid = await h.start("approval_workflow", {"item": "x"})
    await h.wait_for_state(iid, lambda s: "awaiting_approval" in (s.serialized_custom_status or ""))
    await pay(h, iid, 500, "psp-wrong")
    [dead] = await h.dead_letters(1)
    assert text(dead.dead_letter_reason) == "UnknownEvent"
    assert text(dead.dead_letter_error_description) == (
        f"instance {iid!r} is a 'approval_workflow', which does not wait for 'PaymentReceived'; "
        "it waits for ApprovalEvent")
    # The instance is untouched and still waiting; an ApprovalEvent sent as `event` completes it.
    await h.send({"instance_id": iid, "name": "ApprovalEvent", "data": {"approved": True, "approver": "ada"}},
                 subject="event")
    assert await h.wait_for_output(iid) == "Approved"
