"""Where localdts answered differently from DTS (issue 23, item 4), each case as another client found it.

A sub-orchestration knows its parent; a wait without a gRPC deadline (or with a huge one) waits; cleaning entity
storage reports what DTS reports; an instance id DTS would refuse (too long, or an entity's: a leading "@") is
refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from durabletask import entities, task
from durabletask import history as h
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from localdts.limits import MAX_INSTANCE_ID_LENGTH
from tests.localdts import support
from tests.support.wait import until


def child(ctx: task.OrchestrationContext, _: Any) -> Any:
    return ctx.parent_instance_id


def parent(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, Any]:
    seen = yield ctx.call_sub_orchestrator(child)
    return seen


def slow_child(ctx: task.OrchestrationContext, seconds: int) -> Generator[task.Task[Any], Any, Any]:
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=seconds))
    return "late"


def waits_for_slow_child(ctx: task.OrchestrationContext, seconds: int) -> Generator[task.Task[Any], Any, Any]:
    result = yield ctx.call_sub_orchestrator(slow_child, input=seconds)
    return result


def waits_for_go(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, Any]:
    value = yield ctx.wait_for_external_event("go")
    return value


def parent_of_a_waiting_child(ctx: task.OrchestrationContext, child_id: str) -> Generator[task.Task[Any], Any, Any]:
    value = yield ctx.call_sub_orchestrator(waits_for_go, instance_id=child_id)
    return value


def parent_of_a_long_id(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, Any]:
    try:
        yield ctx.call_sub_orchestrator(child, instance_id="y" * (MAX_INSTANCE_ID_LENGTH + 1))
    except task.TaskFailedError as error:
        return error.details.message
    return "created"


class Box(entities.DurableEntity):
    def put(self, value: Any) -> None:
        self.set_state(value)


@pytest.fixture
def parity_worker(dts: LocalDts) -> Iterator[DurableTaskSchedulerWorker]:
    w = DurableTaskSchedulerWorker(host_address=dts.endpoint, taskhub=support.TASKHUB, token_credential=None,
                                   secure_channel=False)
    for orchestrator in (child, parent, slow_child, waits_for_slow_child, waits_for_go,
                         parent_of_a_waiting_child, parent_of_a_long_id):
        w.add_orchestrator(orchestrator)
    w.add_entity(Box)
    w.start()
    yield w
    w.stop()


def test_a_sub_orchestration_knows_its_parent(client: DurableTaskSchedulerClient,
                                              parity_worker: DurableTaskSchedulerWorker) -> None:
    iid = client.schedule_new_orchestration(parent)
    state = client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.serialized_output == f'"{iid}"'

    [sub_event] = [e for e in client.get_orchestration_history(iid)
                   if isinstance(e, h.SubOrchestrationInstanceCreatedEvent)]
    started = [e for e in client.get_orchestration_history(sub_event.instance_id)
               if isinstance(e, h.ExecutionStartedEvent)]
    info = started[0].parent_instance
    assert info is not None and info.orchestration_instance is not None
    assert (info.orchestration_instance.instance_id, info.name, info.task_scheduled_id) == (
        iid, "parent", sub_event.event_id)


@pytest.mark.parametrize("timeout", [None, 10**9], ids=["no-deadline", "a-deadline-in-31-years"])
def test_a_wait_without_a_usable_deadline_waits_for_the_end(client: DurableTaskSchedulerClient,
                                                            parity_worker: DurableTaskSchedulerWorker,
                                                            timeout: float | None) -> None:
    iid = client.schedule_new_orchestration(waits_for_go)
    started = client.wait_for_orchestration_start(iid, timeout=timeout)  # type: ignore[arg-type]
    assert started is not None and started.runtime_status == OrchestrationStatus.RUNNING
    # The event is raised from another thread while this one waits: the wait must return the end, not an error.
    threading.Timer(0.5, lambda: client.raise_orchestration_event(iid, "go", data=7)).start()
    state = client.wait_for_orchestration_completion(iid, timeout=timeout)  # type: ignore[arg-type]
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.serialized_output == "7"


def test_a_sub_orchestration_reports_to_its_parent_across_a_restart(
        dts: LocalDts, client: DurableTaskSchedulerClient, parity_worker: DurableTaskSchedulerWorker) -> None:
    iid = client.schedule_new_orchestration(parent_of_a_waiting_child, input="restart-child")
    support.wait_status(client, "restart-child", OrchestrationStatus.RUNNING)
    dts.stop()
    dts.start()
    until(lambda: support.state(client, "restart-child") is not None, what="the client to reconnect", timeout=10)
    client.raise_orchestration_event("restart-child", "go", data="after")
    state = client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.serialized_output == '"after"'


@pytest.mark.slow
def test_a_sub_orchestration_longer_than_30_s_reports_to_its_parent(
        client: DurableTaskSchedulerClient, parity_worker: DurableTaskSchedulerWorker) -> None:
    """The SDK backend's watcher waited 30 s for the child and then gave up, leaving the parent RUNNING for ever."""
    iid = client.schedule_new_orchestration(waits_for_slow_child, input=33)
    state = client.wait_for_orchestration_completion(iid, timeout=60)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.serialized_output == '"late"'


def test_clean_entity_storage_reports_what_dts_reports(client: DurableTaskSchedulerClient,
                                                       parity_worker: DurableTaskSchedulerWorker) -> None:
    """DTS always answers 0 and 0: it purges empty entities itself (durabletask-python's DTS test suite)."""
    kept = entities.EntityInstanceId("Box", "kept")
    emptied = entities.EntityInstanceId("Box", "emptied")
    client.signal_entity(kept, "put", input=1)
    client.signal_entity(emptied, "put", input=2)
    until(lambda: client.get_entity(emptied) is not None, what="the entity to exist", timeout=10)
    client.signal_entity(emptied, "delete")
    until(lambda: client.get_entity(emptied) is None, what="the emptied entity to be gone", timeout=10)

    result = client.clean_entity_storage(remove_empty_entities=True, release_orphaned_locks=True)
    assert (result.empty_entities_removed, result.orphaned_locks_released) == (0, 0)
    meta = client.get_entity(kept, include_state=True)
    assert meta is not None and meta.get_state(int) == 1


@pytest.mark.parametrize(("instance_id", "reason"), [
    ("x" * (MAX_INSTANCE_ID_LENGTH + 1), f"longer than {MAX_INSTANCE_ID_LENGTH} characters"),
    ("x" * 100_000, f"longer than {MAX_INSTANCE_ID_LENGTH} characters"),
    ("@counter@1", "starts with '@', which is reserved for entity ids"),  # an entity's id (the SDKs reserve '@')
])
def test_an_instance_id_dts_would_refuse_is_invalid_argument(client: DurableTaskSchedulerClient, instance_id: str,
                                                             reason: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.schedule_new_orchestration("hello_cities", instance_id=instance_id)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in error.details()
    assert len(error.details()) < 300  # the id itself is not echoed in full


def test_an_instance_id_at_the_limit_is_accepted(client: DurableTaskSchedulerClient) -> None:
    iid = "x" * MAX_INSTANCE_ID_LENGTH
    assert client.schedule_new_orchestration("hello_cities", instance_id=iid) == iid


def test_a_sub_orchestration_with_an_id_dts_would_refuse_fails_in_its_parent(
        client: DurableTaskSchedulerClient, parity_worker: DurableTaskSchedulerWorker) -> None:
    iid = client.schedule_new_orchestration(parent_of_a_long_id)
    state = client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert f"longer than {MAX_INSTANCE_ID_LENGTH} characters" in (state.serialized_output or "")
