"""Every workflow through the real DurableTaskSchedulerWorker and client, over gRPC, on the in-memory backend."""

from __future__ import annotations

import json
import uuid

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.client import OrchestrationState, OrchestrationStatus

from activities import services
from tests.support.wait import until

pytestmark = pytest.mark.usefixtures("dts_worker")

FAST_RETRY = {"first_retry_seconds": 0.05, "max_interval_seconds": 0.2, "backoff": 2.0}


def run(client: DurableTaskSchedulerClient, name: str, input: object = None, timeout: int = 30) -> OrchestrationState:
    instance_id = client.schedule_new_orchestration(name, input=input, instance_id=f"t-{uuid.uuid4().hex}")
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None
    return state


def output(state: OrchestrationState) -> object:
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    assert state.serialized_output is not None
    return json.loads(state.serialized_output)


def custom_status(state: OrchestrationState) -> object:
    assert state.serialized_custom_status is not None
    return json.loads(state.serialized_custom_status)


def test_hello_cities_chains_three_greetings(dts_client: DurableTaskSchedulerClient) -> None:
    assert output(run(dts_client, "hello_cities")) == "Hello Tokyo!, Hello Seattle!, Hello London!"


def test_fan_out_fan_in_default_cities_in_order(dts_client: DurableTaskSchedulerClient) -> None:
    assert output(run(dts_client, "fan_out_fan_in")) == [
        "Hello Tokyo!", "Hello Seattle!", "Hello London!", "Hello Paris!", "Hello Berlin!",
    ]


def test_fan_out_fan_in_keeps_input_order(dts_client: DurableTaskSchedulerClient) -> None:
    cities = [f"City{i}" for i in range(25)]
    assert output(run(dts_client, "fan_out_fan_in", cities)) == [f"Hello {c}!" for c in cities]


def start_approval(client: DurableTaskSchedulerClient, input: object | None = None) -> str:
    instance_id = f"appr-{uuid.uuid4().hex}"
    client.schedule_new_orchestration("approval_workflow", input=input or {"item": "laptop"}, instance_id=instance_id)
    return instance_id


def wait_until_awaiting(client: DurableTaskSchedulerClient, instance_id: str) -> None:
    """Poll (not a wait_for_* stream: the backend's thread pool is small) until the wait has begun."""

    def awaiting() -> bool:
        state = client.get_orchestration_state(instance_id)
        return bool(state and "awaiting_approval" in (state.serialized_custom_status or ""))

    until(awaiting, what=f"{instance_id} to reach awaiting_approval", timeout=20, interval=0.02)


def test_approval_approved_records_approver(dts_client: DurableTaskSchedulerClient) -> None:
    instance_id = start_approval(dts_client)
    wait_until_awaiting(dts_client, instance_id)
    dts_client.raise_orchestration_event(
        instance_id, "ApprovalEvent", data={"approved": True, "approver": "ada", "comment": "ok"}
    )
    state = dts_client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    assert output(state) == "Approved"
    status = custom_status(state)
    assert isinstance(status, dict)
    assert status["approver"] == "ada" and status["approved"] is True and status["comment"] == "ok"


def test_approval_rejected(dts_client: DurableTaskSchedulerClient) -> None:
    instance_id = start_approval(dts_client)
    wait_until_awaiting(dts_client, instance_id)
    dts_client.raise_orchestration_event(instance_id, "ApprovalEvent", data={"approved": False, "approver": "bob"})
    state = dts_client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    assert output(state) == "Rejected"
    assert custom_status(state) == {
        "stage": "decided", "outcome": "Rejected", "approved": False, "approver": "bob", "comment": None,
    }


def test_approval_bare_boolean_is_accepted(dts_client: DurableTaskSchedulerClient) -> None:
    instance_id = start_approval(dts_client)
    dts_client.raise_orchestration_event(instance_id, "ApprovalEvent", data=True)
    state = dts_client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    assert output(state) == "Approved"


def test_approval_times_out(dts_client: DurableTaskSchedulerClient) -> None:
    state = run(dts_client, "approval_workflow", {"item": "x", "timeout_seconds": 0.5})
    assert output(state) == "Timed out"
    status = custom_status(state)
    assert isinstance(status, dict) and status["stage"] == "timed_out"


def test_approval_event_before_the_wait_is_not_lost(dts_client: DurableTaskSchedulerClient) -> None:
    instance_id = f"appr-early-{uuid.uuid4().hex}"
    dts_client.schedule_new_orchestration("approval_workflow", input={"item": "x"}, instance_id=instance_id)
    # Raised immediately: the orchestration has not even run its first activity yet.
    dts_client.raise_orchestration_event(instance_id, "ApprovalEvent", data={"approved": True, "approver": "early"})
    state = dts_client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    assert output(state) == "Approved"


def test_approval_malformed_event_is_ignored_then_decided(dts_client: DurableTaskSchedulerClient) -> None:
    instance_id = start_approval(dts_client)
    wait_until_awaiting(dts_client, instance_id)
    dts_client.raise_orchestration_event(instance_id, "ApprovalEvent", data={"approved": "yes"})
    dts_client.raise_orchestration_event(instance_id, "ApprovalEvent", data={"approved": False, "approver": "c"})
    state = dts_client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    assert output(state) == "Rejected"


def test_retry_succeeds_after_failures(dts_client: DurableTaskSchedulerClient) -> None:
    key = f"retry-{uuid.uuid4().hex}"
    state = run(dts_client, "workflow_with_retry", {"key": key, "fail_times": 2, "retry": FAST_RETRY})
    assert output(state) == "Service succeeded after 3 attempt(s)"
    assert services.attempts(key) == 3
    assert state.serialized_custom_status in (None, "")


def test_retry_exhausted_compensates_and_sets_error(dts_client: DurableTaskSchedulerClient) -> None:
    key = f"retry-{uuid.uuid4().hex}"
    state = run(dts_client, "workflow_with_retry", {"key": key, "always_fail": True, "retry": FAST_RETRY})
    assert output(state) == "Compensated"
    assert services.attempts(key) == 3
    status = custom_status(state)
    assert isinstance(status, dict)
    assert "service unavailable (attempt 3)" in status["error"]
