"""Approvals that race their instance's end. Found by the chaos campaign (seed 2, 60 s): a competing decision,
published 0.15 s after the first, was read as RUNNING, raised a moment after the first decision had finished the
instance, and completed as "raised". DTS accepts a raise on a finished instance and drops the event, so the
decision vanished: neither applied nor dead-lettered. Made deterministic here: the real client, with the other
decision raised (and the instance finished) between our status read and our raise.

Seed 17 (300 s) found the same loss when the worker holding the instance's last step was paused longer than the
listener's confirmation bound: the listener trusted the pending event, then that step ended the instance. Made
deterministic below with a hand-driven worker (tests/localdts/support.RawWorker) that holds the step, the whole
listener over localbus, and a confirmation bound shortened to 0.3 s.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.servicebus import ServiceBusSubQueue
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

from listener.dispatch import Dispatcher, InstanceNotRunning, Raised
from listener.settlement import DeadLetter, decide
from localbus import LocalBus
from sbworker.core import messages
from sbworker.core.codes import APPROVAL_EVENT, PROP_CONFIRM
from sbworker.core.contract import ApprovalRequest
from tests.fixtures.dts import DtsBackend, start_backend
from tests.integration.harness import Harness
from tests.localdts.support import RawWorker, new_client
from tests.reliability.common import awaiting_approval, decision, wait_state

pytestmark = pytest.mark.usefixtures("dts_worker")


class OvertakenOnce(AsyncDurableTaskSchedulerClient):
    """The SDK's client; on the first raise, another decision gets there first and the instance finishes."""

    def __init__(self, backend: DtsBackend, first: dict[str, Any]) -> None:
        super().__init__(host_address=backend.settings.endpoint, taskhub=backend.settings.taskhub,
                         secure_channel=False, token_credential=None)
        self.first: dict[str, Any] | None = first

    async def raise_orchestration_event(self, instance_id: str, event_name: str, *, data: Any = None) -> None:
        if self.first is not None:
            first, self.first = self.first, None
            await super().raise_orchestration_event(instance_id, event_name, data=first)
            await self.wait_for_orchestration_completion(instance_id, timeout=30)
        await super().raise_orchestration_event(instance_id, event_name, data=data)


def _waiting_instance(dts_client: Any) -> str:
    iid = f"race-{uuid.uuid4().hex}"
    dts_client.schedule_new_orchestration("approval_workflow", input={"item": iid}, instance_id=iid)
    wait_state(dts_client, iid, awaiting_approval, what="awaiting approval")
    return iid


async def test_a_decision_that_lands_after_another_finished_the_instance_is_dead_lettered(
        dts_backend: DtsBackend, dts_client: Any) -> None:
    iid = _waiting_instance(dts_client)
    client = OvertakenOnce(dts_backend, {"approved": True, "approver": "first", "message_id": "m-first"})
    try:
        request = ApprovalRequest(iid, approved=False, approver="second", comment=None)
        outcome = await Dispatcher(client).dispatch(request, message_id="m-second")
    finally:
        await client.close()
    assert isinstance(outcome, InstanceNotRunning), outcome  # was Raised: acknowledged, then dropped by DTS
    action = decide(request, outcome)
    assert isinstance(action, DeadLetter) and action.reason == "InstanceNotRunning", action
    state = dts_client.get_orchestration_state(iid)
    assert json.loads(state.serialized_output) == "Approved"
    assert decision(state)["approver"] == "first"


async def test_an_approval_that_reaches_a_waiting_instance_is_still_raised(dts_backend: DtsBackend,
                                                                           dts_client: Any) -> None:
    iid = _waiting_instance(dts_client)
    client = AsyncDurableTaskSchedulerClient(host_address=dts_backend.settings.endpoint,
                                             taskhub=dts_backend.settings.taskhub, secure_channel=False,
                                             token_credential=None)
    try:
        outcome = await Dispatcher(client).dispatch(ApprovalRequest(iid, approved=True, approver="only",
                                                                    comment=None), message_id="m-only")
    finally:
        await client.close()
    assert outcome == Raised(iid)
    assert decision(wait_state(dts_client, iid, lambda s: decision(s) is not None, what="decision"))["approver"] \
        == "only"


@dataclass
class HeldStep:
    """An approval_workflow instance whose worker took the step carrying a first decision and went quiet (paused,
    as SIGSTOP does in the chaos campaign): the instance stays RUNNING, and an event raised now waits behind it."""

    harness: Harness
    worker: RawWorker
    instance_id: str
    step: Any  # the work item held

    async def answer(self, how: str) -> None:
        """The worker returns: `complete` ends the instance with the step; `wait` keeps it running."""
        await asyncio.to_thread(getattr(self.worker, how), self.step)

    async def raised(self) -> list[str]:
        """The message ids of the ApprovalEvents in the instance's history."""
        assert self.harness.dts is not None
        history = await self.harness.dts.get_orchestration_history(self.instance_id)
        return [json.loads(e.input).get("message_id") for e in history
                if getattr(e, "name", None) == APPROVAL_EVENT and getattr(e, "input", None)]


@pytest.fixture
async def held(localbus: LocalBus) -> AsyncIterator[HeldStep]:
    backend = start_backend()  # no worker of ours: only the hand-driven one takes its work
    worker = RawWorker(backend.port, orchestrations=("approval_workflow",))
    client = new_client(backend.port)
    try:
        iid = f"held-{uuid.uuid4().hex}"
        client.schedule_new_orchestration("approval_workflow", input={"item": iid}, instance_id=iid)
        await asyncio.to_thread(lambda: worker.wait(worker.take()))  # started, waiting for a decision
        client.raise_orchestration_event(iid, APPROVAL_EVENT,
                                         data={"approved": True, "approver": "first", "message_id": "m-first"})
        step = await asyncio.to_thread(worker.take)  # the step that takes the first decision: held
        async with Harness(localbus, backend.settings, confirm_seconds=0.3) as h:
            yield HeldStep(h, worker, iid, step)
    finally:
        worker.close()
        client.close()
        backend.stop()


async def _confirm_copy(h: Harness, mid: str) -> None:
    """The approval was raised, not taken within the bound, and handed to a confirm copy: not completed on trust."""
    copy = await h.reenqueued(mid)
    assert messages.prop(copy, PROP_CONFIRM) is not None


async def test_a_decision_pending_while_the_worker_is_away_is_dead_lettered_when_the_held_step_ends_the_instance(
        held: HeldStep) -> None:
    h = held.harness
    mid = await h.approve(held.instance_id, approved=False, approver="second")
    await _confirm_copy(h, mid)
    await held.answer("complete")  # the worker returns; its step ends the instance with the first decision
    [dead] = await h.dead_letters(1)  # was: completed as raised, then dropped with the instance (chaos seed 17)
    assert dead.message_id == mid and messages.text(dead.dead_letter_reason) == "InstanceNotRunning"
    assert "raised while it ran but never processed" in (messages.text(dead.dead_letter_error_description) or "")
    await h.queue_drained()
    assert await held.raised() == ["m-first"]


async def test_a_decision_pending_while_the_worker_is_away_is_completed_once_the_instance_takes_it(
        held: HeldStep) -> None:
    h = held.harness
    mid = await h.approve(held.instance_id, approved=False, approver="second")
    await _confirm_copy(h, mid)
    await held.answer("wait")  # the worker returns and keeps the instance running: the decision is offered next
    step = await asyncio.to_thread(held.worker.take)
    await asyncio.to_thread(held.worker.complete, step)  # it takes the second decision and ends
    await h.queue_drained()
    assert await h.peek_queue(sub_queue=ServiceBusSubQueue.DEAD_LETTER) == []
    assert await held.raised() == ["m-first", mid]  # raised once: the confirm copies only read
