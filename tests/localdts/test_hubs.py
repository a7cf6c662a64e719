"""Task hubs kept apart, as DTS keeps them (asked by the dashboard's hub selector, issue 26 item 3).

The SDK's DTS client and worker name their hub in the ``taskhub`` gRPC header; each hub has its own instances
and work items, and its own data file, found again after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationQuery, OrchestrationStatus

from localdts import LocalDts
from localdts.hubs import MAX_TASK_HUBS
from orchestrations import registry
from tests.localdts import support


def _client(dts: LocalDts, hub: str) -> DurableTaskSchedulerClient:
    return DurableTaskSchedulerClient(host_address=dts.endpoint, taskhub=hub, token_credential=None,
                                      secure_channel=False)


def _worker(dts: LocalDts, hub: str) -> DurableTaskSchedulerWorker:
    w = DurableTaskSchedulerWorker(host_address=dts.endpoint, taskhub=hub, token_credential=None,
                                   secure_channel=False)
    registry.register(w)
    w.start()
    return w


@pytest.fixture
def pair(dts: LocalDts) -> Iterator[tuple[DurableTaskSchedulerClient, DurableTaskSchedulerClient]]:
    a, b = _client(dts, "hub-a"), _client(dts, "hub-b")
    yield a, b
    a.close()
    b.close()


def test_each_hub_has_its_own_instances_and_work(
        dts: LocalDts, pair: tuple[DurableTaskSchedulerClient, DurableTaskSchedulerClient]) -> None:
    a, b = pair
    a.schedule_new_orchestration("hello_cities", instance_id="same-id", input=None)
    b.schedule_new_orchestration("approval_workflow", instance_id="same-id", input={"timeout_seconds": 3600})
    only_b = b.schedule_new_orchestration("hello_cities", instance_id="only-in-b")
    assert a.get_orchestration_state("only-in-b") is None
    assert {s.instance_id for s in a.get_all_orchestration_states(OrchestrationQuery())} == {"same-id"}
    assert {s.instance_id for s in b.get_all_orchestration_states(OrchestrationQuery())} == {"same-id", only_b}
    state_a, state_b = a.get_orchestration_state("same-id"), b.get_orchestration_state("same-id")
    assert state_a is not None and state_b is not None and (state_a.name, state_b.name) == (
        "hello_cities", "approval_workflow")

    worker_a = _worker(dts, "hub-a")  # hub a's worker gets hub a's work only
    try:
        done = a.wait_for_orchestration_completion("same-id", timeout=30)
        assert done is not None and done.runtime_status == OrchestrationStatus.COMPLETED
        state = b.get_orchestration_state(only_b)
        assert state is not None and state.runtime_status == OrchestrationStatus.PENDING
    finally:
        worker_a.stop()
    worker_b = _worker(dts, "hub-b")
    try:
        done = b.wait_for_orchestration_completion(only_b, timeout=30)
        assert done is not None and done.runtime_status == OrchestrationStatus.COMPLETED
    finally:
        worker_b.stop()
    default = support.new_client(dts.port)  # the default hub ("default") saw none of it
    try:
        assert default.get_all_orchestration_states(OrchestrationQuery()) == []
    finally:
        default.close()


def test_hubs_keep_their_files_and_instances_across_a_restart(
        dts: LocalDts, data_dir: Path, pair: tuple[DurableTaskSchedulerClient, DurableTaskSchedulerClient]) -> None:
    a, b = pair
    waiting = a.schedule_new_orchestration("approval_workflow", instance_id="waits-in-a",
                                           input={"timeout_seconds": 3600})
    b.schedule_new_orchestration("hello_cities", instance_id="pending-in-b")
    dts.stop()
    assert {p.name for p in data_dir.glob("*.sqlite3")} == {"dts.sqlite3", "dts.hub-a.sqlite3", "dts.hub-b.sqlite3"}
    dts.start()
    assert set(dts.hub("hub-a")._instances) == {waiting}  # loaded at start: running instances of every hub
    worker_a = _worker(dts, "hub-a")
    try:
        support.wait_custom_status(a, waiting, "awaiting_approval")
        support.retrying(lambda: a.raise_orchestration_event(waiting, "ApprovalEvent",
                                                             data={"approved": True, "approver": "ada"}))
        done = a.wait_for_orchestration_completion(waiting, timeout=30)
        assert done is not None and done.serialized_output == '"Approved"'
    finally:
        worker_a.stop()
    assert support.retrying(lambda: b.get_orchestration_state("pending-in-b")) is not None


def test_a_hub_name_that_cannot_be_served_is_refused(dts: LocalDts) -> None:
    bad = _client(dts, "no/slashes")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            bad.get_orchestration_state("x")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "task hub name" in caught.value.details()
    finally:
        bad.close()


def test_hubs_are_bounded() -> None:
    with LocalDts(port=0) as dts:  # memory mode: no files to make
        for n in range(MAX_TASK_HUBS - 1):  # the default hub is one
            dts.hub(f"h{n}")
        extra = _client(dts, "one-too-many")
        try:
            with pytest.raises(grpc.RpcError) as caught:
                extra.get_orchestration_state("x")
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"at most {MAX_TASK_HUBS} task hubs" in caught.value.details()
        finally:
            extra.close()
