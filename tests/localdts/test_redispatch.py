"""Item 5: work taken by a worker whose stream ends before it completes the work is offered again."""

from __future__ import annotations

from pathlib import Path

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


def test_orchestration_taken_by_a_vanished_stream_is_offered_again_and_the_late_answer_is_stale(
        dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    iid = client.schedule_new_orchestration("hello_cities")

    first = support.RawWorker(dts.port)
    taken = first.take()
    assert taken.orchestratorRequest.instanceId == iid
    first.go_away()  # without answering

    second = support.RawWorker(dts.port)
    again = second.take()
    assert again.orchestratorRequest.instanceId == iid
    assert [e.WhichOneof("eventType") for e in again.orchestratorRequest.newEvents][:2] == \
        ["orchestratorStarted", "executionStarted"]
    assert again.completionToken != taken.completionToken

    # The first worker's late answer would complete the instance; it must be ignored as stale.
    first.complete(again, token=taken.completionToken)
    state = client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status == OrchestrationStatus.PENDING

    second.complete(again)
    state = client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    first.close()
    second.close()
