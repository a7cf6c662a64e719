"""Item 2: an instance with ``start_at`` stays PENDING, undispatched, until then, also across a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from durabletask import history as h
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from tests.localdts import support


def _pending_until(client: DurableTaskSchedulerClient, iid: str, start_at: datetime) -> int:
    """Observe the instance until shortly before ``start_at``; every observation must say PENDING."""
    seen = 0
    while datetime.now(UTC) < start_at - timedelta(milliseconds=300):
        state = client.get_orchestration_state(iid)
        if datetime.now(UTC) >= start_at:
            break  # the answer may be from after the start: it proves nothing either way
        assert state is not None and state.runtime_status == OrchestrationStatus.PENDING
        seen += 1
        time.sleep(0.1)
    return seen


def _first_episode_not_before(client: DurableTaskSchedulerClient, iid: str, start_at: datetime) -> None:
    events = client.get_orchestration_history(iid)
    scheduled = [e for e in events if isinstance(e, h.TaskScheduledEvent)]
    assert scheduled, "the first episode never ran"
    assert scheduled[0].timestamp >= start_at  # the worker was first given the instance at start_at or later


def test_start_at_3s_ahead_is_pending_then_running(dts: LocalDts, client: DurableTaskSchedulerClient,
                                                   worker: DurableTaskSchedulerWorker) -> None:
    start_at = datetime.now(UTC) + timedelta(seconds=3)
    iid = client.schedule_new_orchestration("approval_workflow", input={"timeout_seconds": 3600}, start_at=start_at)
    assert _pending_until(client, iid, start_at) > 0

    support.wait_status(client, iid, OrchestrationStatus.RUNNING)
    _first_episode_not_before(client, iid, start_at)


def test_start_at_is_kept_across_a_restart(dts: LocalDts, client: DurableTaskSchedulerClient,
                                           worker: DurableTaskSchedulerWorker) -> None:
    start_at = datetime.now(UTC) + timedelta(seconds=3)
    iid = client.schedule_new_orchestration("hello_cities", start_at=start_at)
    dts.stop()
    dts.start()
    assert _pending_until(client, iid, start_at) > 0

    done = support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
    assert done.serialized_output == '"Hello Tokyo!, Hello Seattle!, Hello London!"'
    _first_episode_not_before(client, iid, start_at)


def test_an_event_raised_before_the_start_waits_for_it(dts: LocalDts, client: DurableTaskSchedulerClient,
                                                       worker: DurableTaskSchedulerWorker) -> None:
    start_at = datetime.now(UTC) + timedelta(seconds=2)
    iid = client.schedule_new_orchestration("approval_workflow", input={"timeout_seconds": 3600}, start_at=start_at)
    client.raise_orchestration_event(iid, "ApprovalEvent", data={"approved": True, "approver": "ada"})
    assert _pending_until(client, iid, start_at) > 0

    assert support.wait_status(client, iid, OrchestrationStatus.COMPLETED).serialized_output == '"Approved"'
    _first_episode_not_before(client, iid, start_at)
