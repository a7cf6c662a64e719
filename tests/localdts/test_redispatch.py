"""Item 5: work taken by a worker whose stream ends before it completes the work is offered again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from tests.localdts import support
from tests.support.wait import until


def test_worker_killed_mid_activity_has_its_activity_run_again_by_a_new_worker(
        dts: LocalDts, client: DurableTaskSchedulerClient, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    runs = marks / "runs"
    first = support.worker_proc(dts.port, tmp_path / "worker1.log").start()
    second = None
    try:
        iid = client.schedule_new_orchestration("run_marked", input=str(marks))
        until(lambda: runs.exists() and runs.read_text().count("\n") == 1, what="the first run", timeout=30)
        first.kill9()  # mid-activity: it is blocked waiting for the release file

        second = support.worker_proc(dts.port, tmp_path / "worker2.log").start()
        until(lambda: runs.read_text().count("\n") == 2, what="the activity to be offered again", timeout=30)
        (marks / "release").touch()

        done = support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
        assert runs.read_text().split() == [str(first.pid), str(second.pid)]
        assert done.serialized_output == str(second.pid)
    finally:
        first.close()
        if second is not None:
            second.close()


def _work_items(port: int) -> tuple[grpc.Channel, Any, stubs.TaskHubSidecarServiceStub]:
    """A hand-driven worker: a raw GetWorkItems stream (its iterator) and a stub to answer on."""
    channel = grpc.insecure_channel(f"localhost:{port}")
    stub = stubs.TaskHubSidecarServiceStub(channel)
    return channel, stub.GetWorkItems(pb.GetWorkItemsRequest()), stub


def test_orchestration_taken_by_a_vanished_stream_is_offered_again_and_the_late_answer_is_stale(
        dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    iid = client.schedule_new_orchestration("hello_cities")

    channel1, stream1, stub1 = _work_items(dts.port)
    taken = next(stream1)
    assert taken.orchestratorRequest.instanceId == iid
    stream1.cancel()  # the worker goes away without answering

    channel2, stream2, stub2 = _work_items(dts.port)
    again = next(stream2)
    assert again.orchestratorRequest.instanceId == iid
    assert [e.WhichOneof("eventType") for e in again.orchestratorRequest.newEvents][:2] == \
        ["orchestratorStarted", "executionStarted"]
    assert again.completionToken != taken.completionToken

    # The first worker's late answer would complete the instance; it must be ignored as stale.
    late = pb.OrchestratorResponse(instanceId=iid, completionToken=taken.completionToken, actions=[
        pb.OrchestratorAction(id=-1, completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED))])
    stub1.CompleteOrchestratorTask(late)
    state = client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status == OrchestrationStatus.PENDING

    answer = pb.OrchestratorResponse(instanceId=iid, completionToken=again.completionToken, actions=[
        pb.OrchestratorAction(id=-1, completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED))])
    stub2.CompleteOrchestratorTask(answer)
    state = client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    stream2.cancel()
    channel1.close()
    channel2.close()
