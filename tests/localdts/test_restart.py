"""Item 1: what the backend acknowledged survives a restart, even kill -9, and running instances carry on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from durabletask import history as h
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from tests.localdts import support
from tests.localdts.conftest import Backends
from tests.localdts.worker_proc import build_worker

APPROVE = {"approved": True, "approver": "ada"}


@pytest.fixture
def proc_worker(backends: Backends) -> Iterator[DurableTaskSchedulerWorker]:
    """An in-process worker against the backend subprocess; it reconnects by itself after each restart."""
    w = build_worker(support.endpoint(backends.port))
    w.start()
    yield w
    w.stop()


def test_pending_approval_survives_two_restarts(backends: Backends, proc_client: DurableTaskSchedulerClient,
                                                proc_worker: DurableTaskSchedulerWorker) -> None:
    backends.start()
    iid = proc_client.schedule_new_orchestration("approval_workflow", input={"item": "laptop", "timeout_seconds": 3600})
    support.wait_custom_status(proc_client, iid, "awaiting_approval")

    backends.kill9()
    backends.start()
    assert backends.current is not None
    state = support.wait_status(proc_client, iid, OrchestrationStatus.RUNNING)
    assert "awaiting_approval" in (state.serialized_custom_status or "")

    assert backends.current.terminate() == 0  # the second restart is a clean one
    backends.start()
    support.retrying(lambda: proc_client.raise_orchestration_event(iid, "ApprovalEvent", data=APPROVE))

    done = support.wait_status(proc_client, iid, OrchestrationStatus.COMPLETED)
    assert done.serialized_output == '"Approved"'
    events = proc_client.get_orchestration_history(iid)
    assert support.count(events, h.ExecutionStartedEvent) == 1
    assert support.count(events, h.ExecutionCompletedEvent) == 1
    assert support.count(events, h.TaskScheduledEvent) == 1  # send_approval_request was not asked for again


def test_timer_still_fires_after_kill9(backends: Backends, proc_client: DurableTaskSchedulerClient,
                                       proc_worker: DurableTaskSchedulerWorker) -> None:
    backends.start()
    iid = proc_client.schedule_new_orchestration("approval_workflow", input={"timeout_seconds": 4})
    support.wait_custom_status(proc_client, iid, "awaiting_approval")
    backends.kill9()  # the 4 s timer is armed only in the process we just killed
    backends.start()

    done = support.wait_status(proc_client, iid, OrchestrationStatus.COMPLETED)
    assert done.serialized_output == '"Timed out"'
    events = proc_client.get_orchestration_history(iid)
    assert support.count(events, h.TimerCreatedEvent) == 1
    assert support.count(events, h.TimerFiredEvent) == 1


def test_acknowledged_starts_and_events_survive_kill9_before_any_worker(
        backends: Backends, proc_client: DurableTaskSchedulerClient) -> None:
    backends.start()
    hellos = [proc_client.schedule_new_orchestration("hello_cities") for _ in range(20)]
    approval = proc_client.schedule_new_orchestration("approval_workflow", input={"timeout_seconds": 3600})
    proc_client.raise_orchestration_event(approval, "ApprovalEvent", data=APPROVE)
    backends.kill9()
    backends.start()

    worker = build_worker(support.endpoint(backends.port))
    worker.start()
    try:
        for iid in hellos:
            state = support.wait_status(proc_client, iid, OrchestrationStatus.COMPLETED)
            assert state.serialized_output == '"Hello Tokyo!, Hello Seattle!, Hello London!"'
        assert support.wait_status(proc_client, approval, OrchestrationStatus.COMPLETED).serialized_output == \
            '"Approved"'
    finally:
        worker.stop()


def test_completed_instances_stay_completed_once(dts: LocalDts, client: DurableTaskSchedulerClient,
                                                 worker: DurableTaskSchedulerWorker) -> None:
    iid = client.schedule_new_orchestration("fan_out_fan_in", input=["Oslo", "Lima"])
    before = client.wait_for_orchestration_completion(iid, timeout=30)
    assert before is not None and before.serialized_output == '["Hello Oslo!", "Hello Lima!"]'
    history_before = client.get_orchestration_history(iid)

    dts.stop()
    dts.start()
    # A marker instance started after the restart completes, so the worker has had its chance to misbehave.
    marker = client.schedule_new_orchestration("hello_cities")
    support.wait_status(client, marker, OrchestrationStatus.COMPLETED)

    after = support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
    assert after.serialized_output == before.serialized_output
    assert after.created_at == before.created_at
    assert [type(e) for e in client.get_orchestration_history(iid)] == [type(e) for e in history_before]
    assert support.count(history_before, h.ExecutionCompletedEvent) == 1


def test_memory_mode_keeps_state_on_the_object_and_port_zero_keeps_its_port() -> None:
    with LocalDts(port=0) as dts:
        port = dts.port
        c = support.new_client(port)
        try:
            iid = c.schedule_new_orchestration("hello_cities")
            dts.stop()
            dts.start()
            assert dts.port == port
            state = support.state(c, iid)
            assert state is not None and state.runtime_status == OrchestrationStatus.PENDING
        finally:
            c.close()
    fresh = LocalDts(port=0).start()
    try:
        c = support.new_client(fresh.port)
        assert c.get_orchestration_state(iid) is None  # memory mode: another object knows nothing
        c.close()
    finally:
        fresh.stop()
