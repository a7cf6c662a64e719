"""Approvals that race their instance's end. Found by the chaos campaign (seed 2, 60 s): a competing decision,
published 0.15 s after the first, was read as RUNNING, raised a moment after the first decision had finished the
instance, and completed as "raised". DTS accepts a raise on a finished instance and drops the event, so the
decision vanished: neither applied nor dead-lettered. Made deterministic here: the real client, with the other
decision raised (and the instance finished) between our status read and our raise.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

from listener.dispatch import Dispatcher, InstanceNotRunning, Raised
from listener.settlement import DeadLetter, decide
from sbworker.core.contract import ApprovalRequest
from tests.fixtures.dts import DtsBackend
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
