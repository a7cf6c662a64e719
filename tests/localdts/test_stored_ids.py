"""A start of a new id does not read the store (localdts.instances: a Bloom filter of the ids the store may hold
beyond memory). An id that ended and left memory is still refused, or replaced under a reuse policy, exactly as
before: right away, after a restart, and while the filter is still being learnt from the store after start-up,
including an id that leaves memory meanwhile."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from localdts.bloom import BloomFilter
from localdts.store import Store
from tests.localdts import isolation_workflows as wf
from tests.localdts import support
from tests.support.wait import until

REPLACE_ENDED = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])


def _learnt(dts: LocalDts) -> None:
    until(lambda: dts.backend._live.covers_store, what="the stored ids to be learnt", timeout=10)


def _ended_and_out_of_memory(dts: LocalDts, client: DurableTaskSchedulerClient, iid: str, n: int = 1) -> None:
    client.schedule_new_orchestration(wf.quick, input=n, instance_id=iid)
    state = client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    until(lambda: dts.backend._live.in_memory(iid) is None, what=f"{iid} to leave memory", timeout=10)


def _refused(client: DurableTaskSchedulerClient, iid: str) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        client.schedule_new_orchestration(wf.quick, input=99, instance_id=iid)
    return raised.value.code()  # type: ignore[no-any-return]


def _input(client: DurableTaskSchedulerClient, iid: str) -> str | None:
    state = client.get_orchestration_state(iid, fetch_payloads=True)
    assert state is not None
    return state.serialized_input


def _replaced(client: DurableTaskSchedulerClient, iid: str, n: int) -> None:
    client.schedule_new_orchestration(wf.quick, input=n, instance_id=iid, reuse_id_policy=REPLACE_ENDED)
    state = client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.serialized_input == str(n)


def test_an_ended_id_that_left_memory_is_refused_or_replaced_as_before(
        dts: LocalDts, client: DurableTaskSchedulerClient, worker: DurableTaskSchedulerWorker) -> None:
    _learnt(dts)  # so the filter answers, not the store: with the id not added when it left memory, it is started
    _ended_and_out_of_memory(dts, client, "ended-1")
    assert _refused(client, "ended-1") == grpc.StatusCode.ALREADY_EXISTS
    assert _input(client, "ended-1") == "1"
    _replaced(client, "ended-1", 2)
    client.purge_orchestration("ended-1")
    client.schedule_new_orchestration(wf.quick, input=3, instance_id="ended-1")  # purged: a new instance
    assert support.wait_status(client, "ended-1", OrchestrationStatus.COMPLETED).serialized_input == "3"


def test_a_new_id_is_started_without_reading_the_store(dts: LocalDts, client: DurableTaskSchedulerClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _learnt(dts)
    store = dts.backend._store
    assert store is not None
    read: list[str] = []
    row = store.row

    def counted(instance_id: str, **kwargs: Any) -> Any:
        read.append(instance_id)
        return row(instance_id, **kwargs)
    monkeypatch.setattr(store, "row", counted)
    iid = client.schedule_new_orchestration(wf.quick, input=1)
    assert support.state(client, iid) is not None and read == []


def test_after_a_restart_ids_from_the_store_are_refused(dts: LocalDts, client: DurableTaskSchedulerClient,
                                                        worker: DurableTaskSchedulerWorker) -> None:
    _ended_and_out_of_memory(dts, client, "before-restart")
    dts.stop()
    dts.start()
    _learnt(dts)
    assert support.retrying(lambda: _refused(client, "before-restart")) == grpc.StatusCode.ALREADY_EXISTS
    _replaced(client, "before-restart", 2)
    fresh = client.schedule_new_orchestration(wf.quick, input=3)
    assert support.wait_status(client, fresh, OrchestrationStatus.COMPLETED).serialized_input == "3"


@contextmanager
def _learning_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Stores opened from here on hand their ids out only once the yielded event is set."""
    release = threading.Event()
    all_ids = Store.all_ids

    @contextmanager
    def held(self: Store, page_size: int) -> Iterator[tuple[int, Iterator[list[str]]]]:
        with all_ids(self, page_size) as (count, pages):
            release.wait(30)
            yield count, pages
    monkeypatch.setattr(Store, "all_ids", held)
    try:
        yield release
    finally:
        release.set()


def test_while_the_ids_are_learnt_stored_ids_and_ids_that_leave_memory_are_refused(
        dts: LocalDts, client: DurableTaskSchedulerClient, worker: DurableTaskSchedulerWorker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _ended_and_out_of_memory(dts, client, "stored")
    dts.stop()
    with _learning_held(monkeypatch) as release:
        dts.start()
        assert support.retrying(lambda: _refused(client, "stored")) == grpc.StatusCode.ALREADY_EXISTS
        # Started, ended and gone from memory after the learning read the store: only the eviction tells.
        _ended_and_out_of_memory(dts, client, "meanwhile", n=2)
        assert not dts.backend._live.covers_store
        release.set()
        _learnt(dts)
    assert _refused(client, "stored") == grpc.StatusCode.ALREADY_EXISTS
    assert _refused(client, "meanwhile") == grpc.StatusCode.ALREADY_EXISTS
    assert (_input(client, "stored"), _input(client, "meanwhile")) == ("1", "2")
    fresh = client.schedule_new_orchestration(wf.quick, input=3)
    assert support.wait_status(client, fresh, OrchestrationStatus.COMPLETED).serialized_input == "3"


def test_the_filter_never_rules_out_an_added_key_however_far_it_grows() -> None:
    added = [uuid.uuid4().hex for _ in range(10_000)]
    grown = BloomFilter(capacity=250)  # six stages
    for key in added:
        grown.add(key)
    built = BloomFilter(capacity=len(added))
    built.add_new(added)
    built.absorb(grown)
    others = [uuid.uuid4().hex for _ in range(10_000)]
    for f in (grown, built):
        assert all(key in f for key in added)
        assert sum(key in f for key in others) < len(others) * 0.03  # ~1% expected: a broken hash shows here
