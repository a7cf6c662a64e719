"""Item 4: every history event carries the time it happened (the SDK backend leaves most at 1970-01-01)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from tests.localdts import support

RUNS = [
    ("hello_cities", None),
    ("fan_out_fan_in", ["Oslo", "Lima", "Pune"]),
    ("workflow_with_retry", {"fail_times": 1, "retry": {"first_retry_seconds": 0.2}}),
    ("approval_workflow", {"timeout_seconds": 3600}),
]


def test_every_history_event_of_every_workflow_has_a_real_timestamp(
        dts: LocalDts, client: DurableTaskSchedulerClient, worker: DurableTaskSchedulerWorker) -> None:
    begin = datetime.now(UTC) - timedelta(seconds=1)
    ids = [client.schedule_new_orchestration(name, input=data) for name, data in RUNS]
    support.wait_custom_status(client, ids[-1], "awaiting_approval")
    client.raise_orchestration_event(ids[-1], "ApprovalEvent", data={"approved": False, "approver": "bo"})
    for iid in ids:
        support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
    end = datetime.now(UTC) + timedelta(seconds=1)

    kinds = set()
    for iid in ids:
        for event in client.get_orchestration_history(iid):
            kinds.add(type(event).__name__)
            assert begin <= event.timestamp <= end, f"{iid}: {type(event).__name__} stamped {event.timestamp}"
    # The events the SDK backend stamps with the epoch are all among those checked.
    assert {"ExecutionStartedEvent", "TaskScheduledEvent", "TaskCompletedEvent", "TaskFailedEvent",
            "TimerCreatedEvent", "TimerFiredEvent", "EventRaisedEvent", "OrchestratorCompletedEvent",
            "ExecutionCompletedEvent"} <= kinds
