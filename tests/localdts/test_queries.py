"""Cost flat in history (issue 28 item 3, issue 26 item 4): ended instances live in the store only, and the query
API pages in SQL. These check correctness only; the costs are measured by ``python -m bench.localdts_history``.

Stores are filled through the store's own code with instances whose creation times tie in groups (so the
continuation must order by id too), of every ended status, under two id prefixes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationQuery, OrchestrationStatus

from localdts import LocalDts, backend
from localdts.queries import MAX_PAGE_SIZE
from localdts.store import _INDEXES, _SCHEMA, APPLICATION_ID, InstanceRow, Store
from tests.localdts import isolation_workflows as wf
from tests.localdts import support
from tests.support.wait import until

BASE_US = 1_780_000_000_000_000  # 2026-05-28
STATUSES = (pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_TERMINATED)
COUNT = 600


@dataclass(frozen=True)
class Made:
    instance_id: str
    status: pb.OrchestrationStatus
    created_us: int
    completed_us: int


def _row(instance_id: str, status: pb.OrchestrationStatus, created_us: int, completed_us: int) -> InstanceRow:
    started = pb.HistoryEvent(eventId=-1, executionStarted=pb.ExecutionStartedEvent(
        name="hello_cities", orchestrationInstance=pb.OrchestrationInstance(instanceId=instance_id)))
    started.timestamp.FromMicroseconds(created_us)
    ended = pb.HistoryEvent(eventId=-1, executionCompleted=pb.ExecutionCompletedEvent(orchestrationStatus=status))
    ended.timestamp.FromMicroseconds(completed_us)
    return InstanceRow(instance_id=instance_id, name="hello_cities", status=status, version=None, input='"in"',
                       output='"out"', custom_status=None, created_us=created_us, updated_us=completed_us,
                       completed_us=completed_us, failure=None, tags=None, pending=b"", trace=None, start_at_us=None,
                       history=[started.SerializeToString(), ended.SerializeToString()])


def _made() -> list[Made]:
    made = []
    for i in range(COUNT):
        prefix = "alpha" if i % 3 else "beta"
        # created in groups of 7 sharing one microsecond; completed in another order (reversed groups of 5)
        made.append(Made(f"{prefix}-{(i * 7919) % 10007:05d}", STATUSES[i % len(STATUSES)], BASE_US + (i // 7) * 1000,
                         BASE_US + 10_000_000 - (i // 5) * 1000))
    return made


def _fill(path: Path, made: list[Made]) -> None:
    store = Store(path, fsync=False)
    try:
        store.insert_many(_row(m.instance_id, m.status, m.created_us, m.completed_us) for m in made)
    finally:
        store.close()


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _newest_first(made: list[Made]) -> list[str]:
    return [m.instance_id for m in sorted(made, key=lambda m: (m.created_us, m.instance_id), reverse=True)]


@pytest.fixture
def made() -> list[Made]:
    return _made()


@pytest.fixture
def filled(tmp_path: Path, made: list[Made]) -> Iterator[LocalDts]:
    _fill(tmp_path / "data" / "dts.sqlite3", made)
    with LocalDts(port=0, data_path=tmp_path / "data") as dts:
        yield dts


@pytest.fixture
def filled_client(filled: LocalDts) -> Iterator[DurableTaskSchedulerClient]:
    c = support.new_client(filled.port)
    yield c
    c.close()


def _pages(client: DurableTaskSchedulerClient, query: pb.InstanceQuery) -> list[list[str]]:
    """Every page of a walk, as ids, one QueryInstances call each."""
    pages, token = [], None
    while True:
        q = pb.InstanceQuery()
        q.CopyFrom(query)
        if token is not None:
            q.continuationToken.value = token
        response: pb.QueryInstancesResponse = client._stub.QueryInstances(pb.QueryInstancesRequest(query=q))
        pages.append([s.instanceId for s in response.orchestrationState])
        if not response.HasField("continuationToken"):
            return pages
        token = response.continuationToken.value
        assert len(pages) < 10_000, "the walk does not end"


@pytest.mark.parametrize("page_size", [7, 25, 1000])
def test_a_walk_sees_every_instance_once_newest_first(filled_client: DurableTaskSchedulerClient, made: list[Made],
                                                      page_size: int) -> None:
    pages = _pages(filled_client, pb.InstanceQuery(maxInstanceCount=page_size))
    seen = [iid for page in pages for iid in page]
    assert seen == _newest_first(made)  # every one, once, in order: the ties are broken by id
    assert all(len(page) == page_size for page in pages[:-1])


def test_the_sdks_walk_gets_everything_and_the_first_page_is_the_newest(
        filled_client: DurableTaskSchedulerClient, made: list[Made]) -> None:
    states = filled_client.get_all_orchestration_states(OrchestrationQuery(max_instance_count=50))
    assert [s.instance_id for s in states] == _newest_first(made)
    [first, *_] = _pages(filled_client, pb.InstanceQuery(maxInstanceCount=25))
    assert first == _newest_first(made)[:25]
    everything = _pages(filled_client, pb.InstanceQuery(maxInstanceCount=0))  # 0: "all", served page by page
    assert len(everything[0]) == 100 and sum(len(p) for p in everything) == COUNT
    huge = _pages(filled_client, pb.InstanceQuery(maxInstanceCount=10**6))
    assert len(huge[0]) == min(COUNT, MAX_PAGE_SIZE)


@pytest.mark.parametrize("statuses, from_index, to_index, prefix", [
    ([pb.ORCHESTRATION_STATUS_FAILED], None, None, None),
    ([pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_TERMINATED], None, None, None),
    ([], 100, 300, None),
    ([], None, None, "beta"),
    ([pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_COMPLETED], 70, 500, "alpha"),
    ([pb.ORCHESTRATION_STATUS_RUNNING], None, None, None),
])
def test_filters_page_exactly_what_a_scan_would_find(filled_client: DurableTaskSchedulerClient, made: list[Made],
                                                     statuses: list[pb.OrchestrationStatus], from_index: int | None,
                                                     to_index: int | None, prefix: str | None) -> None:
    query = pb.InstanceQuery(maxInstanceCount=13, runtimeStatus=statuses)
    created_from = made[from_index].created_us if from_index is not None else None
    created_to = made[to_index].created_us if to_index is not None else None
    if created_from is not None:
        query.createdTimeFrom.FromMicroseconds(created_from)
    if created_to is not None:
        query.createdTimeTo.FromMicroseconds(created_to)
    if prefix is not None:
        query.instanceIdPrefix.value = prefix
    expected = _newest_first([
        m for m in made if (not statuses or m.status in statuses)
        and (created_from is None or m.created_us >= created_from) and (created_to is None or m.created_us < created_to)
        and (prefix is None or m.instance_id.startswith(prefix))])
    assert [iid for page in _pages(filled_client, query) for iid in page] == expected


def test_instances_created_during_a_walk_do_not_disturb_it(filled_client: DurableTaskSchedulerClient,
                                                           made: list[Made]) -> None:
    query, seen, token = pb.InstanceQuery(maxInstanceCount=40), [], None
    while True:
        q = pb.InstanceQuery()
        q.CopyFrom(query)
        if token:
            q.continuationToken.value = token
        response = filled_client._stub.QueryInstances(pb.QueryInstancesRequest(query=q))
        seen += [s.instanceId for s in response.orchestrationState]
        filled_client.schedule_new_orchestration("hello_cities")  # newer than anything the walk has left
        if not response.HasField("continuationToken"):
            break
        token = response.continuationToken.value
    assert len(seen) == len(set(seen))  # nothing twice
    assert [iid for iid in seen if not iid.startswith(("alpha", "beta"))] == []  # the walk began before them
    assert seen == _newest_first(made)


def test_a_continuation_token_not_handed_out_is_invalid_argument(filled_client: DurableTaskSchedulerClient) -> None:
    query = pb.InstanceQuery(maxInstanceCount=5)
    query.continuationToken.value = "page-2"
    with pytest.raises(grpc.RpcError) as caught:
        filled_client._stub.QueryInstances(pb.QueryInstancesRequest(query=query))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a continuation token" in caught.value.details()


def test_list_instance_ids_pages_ended_instances_by_completion(filled_client: DurableTaskSchedulerClient,
                                                               made: list[Made]) -> None:
    wanted = [OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED]
    seen, token = [], None
    while True:
        page = filled_client.list_instance_ids(runtime_status=wanted, page_size=11, continuation_token=token)
        seen += page.items
        token = page.continuation_token
        if token is None:
            break
    expected = [m.instance_id for m in sorted(made, key=lambda m: (m.completed_us, m.instance_id))
                if m.status in (pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_TERMINATED)]
    assert seen == expected


def test_an_ended_instance_is_read_from_the_store_and_not_kept(filled: LocalDts,
                                                               filled_client: DurableTaskSchedulerClient,
                                                               made: list[Made]) -> None:
    assert len(filled.backend._instances) == 0  # nothing running: nothing in memory, whatever the store holds
    one = made[42]
    state = filled_client.get_orchestration_state(one.instance_id, fetch_payloads=True)
    assert state is not None and state.runtime_status == OrchestrationStatus(one.status)
    assert (state.serialized_input, state.serialized_output) == ('"in"', '"out"')
    assert state.created_at.replace(tzinfo=UTC) == _dt(one.created_us)
    assert len(filled_client.get_orchestration_history(one.instance_id)) == 2
    done = filled_client.wait_for_orchestration_completion(one.instance_id, timeout=5)
    assert done is not None and done.runtime_status == OrchestrationStatus(one.status)
    filled_client.raise_orchestration_event(one.instance_id, "late", data=1)  # dropped: it has ended
    assert len(filled.backend._instances) == 0


def test_purge_by_filter_deletes_in_batches_and_says_when_it_is_complete(
        filled_client: DurableTaskSchedulerClient, made: list[Made], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "PURGE_BATCH", 150)
    failed = [m.instance_id for m in made if m.status == pb.ORCHESTRATION_STATUS_FAILED]
    results = []
    while True:
        result = filled_client.purge_orchestrations_by(runtime_status=[OrchestrationStatus.FAILED])
        results.append(result.deleted_instance_count)
        if result.is_complete:
            break
    assert results == [150, len(failed) - 150]
    assert all(filled_client.get_orchestration_state(iid) is None for iid in failed[:20])
    left = filled_client.get_all_orchestration_states(OrchestrationQuery())
    assert len(left) == COUNT - len(failed) and {s.runtime_status for s in left} == {
        OrchestrationStatus.COMPLETED, OrchestrationStatus.TERMINATED}


def test_instances_leave_memory_when_they_end_and_only_running_ones_are_loaded(
        dts: LocalDts, client: DurableTaskSchedulerClient, worker: DurableTaskSchedulerWorker) -> None:
    done = [client.schedule_new_orchestration(wf.quick, input=n) for n in range(30)]
    waiting = client.schedule_new_orchestration(wf.collects_events, input=1)
    for iid in done:
        client.wait_for_orchestration_completion(iid, timeout=30)
    support.wait_status(client, waiting, OrchestrationStatus.RUNNING)
    until(lambda: set(dts.backend._instances) == {waiting}, what="the ended instances to leave memory", timeout=10)
    dts.stop()
    dts.start()
    assert set(dts.backend._instances) == {waiting}
    until(lambda: support.state(client, waiting) is not None, what="the client to reconnect", timeout=10)
    client.raise_orchestration_event(waiting, "data", data="x")
    assert support.wait_status(client, waiting, OrchestrationStatus.COMPLETED).serialized_output == "[1]"
    assert client.get_orchestration_state(done[7]) is not None  # from the store


def test_memory_mode_pages_the_same_way() -> None:
    with LocalDts(port=0) as dts:
        client = support.new_client(dts.port)
        ids = [client.schedule_new_orchestration("hello_cities", instance_id=f"m-{n:03d}") for n in range(45)]
        query = pb.InstanceQuery(maxInstanceCount=10)
        query.instanceIdPrefix.value = "m-"
        pages = _pages(client, query)
        client.close()
    assert [iid for page in pages for iid in page] == list(reversed(ids))  # created in order: newest first
    assert [len(p) for p in pages] == [10, 10, 10, 10, 5]


def test_a_store_of_schema_1_gets_its_indexes_once(tmp_path: Path, made: list[Made]) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.executescript(_SCHEMA)
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    _fill_without_indexes(path, made[:50])
    with LocalDts(port=0, data_path=path) as dts:
        client = support.new_client(dts.port)
        assert len(client.get_all_orchestration_states(OrchestrationQuery(max_instance_count=20))) == 50
        client.close()
    db = sqlite3.connect(path)
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    assert {"instances_by_created", "instances_by_status", "instances_by_completed"} <= indexes
    assert version == 2
    assert "instances_by_created" in _INDEXES


def _fill_without_indexes(path: Path, made: list[Made]) -> None:
    db = sqlite3.connect(path)
    for m in made:
        r = _row(m.instance_id, m.status, m.created_us, m.completed_us)
        db.execute("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (r.instance_id, r.name, r.status, r.version, r.input, r.output, r.custom_status, r.created_us,
                    r.updated_us, r.completed_us, r.failure, r.tags, r.pending, r.trace, r.start_at_us))
        for seq, event in enumerate(r.history):
            db.execute("INSERT INTO history VALUES (?, ?, ?)", (m.instance_id, seq, event))
    db.commit()
    db.close()



@pytest.mark.parametrize("left_memory", [False, True], ids=["at-once", "after-it-left-memory"])
def test_an_event_raised_at_an_ended_instance_keeps_it(dts: LocalDts, client: DurableTaskSchedulerClient,
                                                       worker: DurableTaskSchedulerWorker, left_memory: bool) -> None:
    """Chaos finding F3: the raise marked the ended instance changed, and the flush took 'changed but not in
    memory' for 'purged' and deleted it, history and all."""
    iid = client.schedule_new_orchestration(wf.quick, input=5)
    assert _ended_state(client, iid) == OrchestrationStatus.COMPLETED
    if left_memory:
        until(lambda: iid not in set(dts.backend._instances), what="the instance to leave memory", timeout=10)
    client.raise_orchestration_event(iid, "Anything", data={"late": True})
    client.terminate_orchestration(iid)  # also a no-op on an ended instance
    dts.backend.flush()
    state = client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert len(client.get_orchestration_history(iid)) > 2
    dts.stop()
    dts.start()
    until(lambda: support.state(client, iid) is not None, what="the instance after a restart", timeout=10)


def _ended_state(client: DurableTaskSchedulerClient, iid: str) -> OrchestrationStatus | None:
    state = client.wait_for_orchestration_completion(iid, timeout=30)
    return state.runtime_status if state is not None else None


def test_every_stored_id_is_learnt_page_by_page_and_stays_taken(tmp_path: Path, made: list[Made],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids learnt after start-up (localdts.instances) are walked on the index by creation time: pages of 5
    end inside the groups of 7 that share a creation time, so a walk that lost or skipped a tie shows here."""
    monkeypatch.setattr(backend, "ID_PAGE", 5)
    monkeypatch.setattr(backend, "ID_PAUSE", 0)
    _fill(tmp_path / "data" / "dts.sqlite3", made)
    with LocalDts(port=0, data_path=tmp_path / "data") as dts:
        until(lambda: dts.backend._live.covers_store, what="the stored ids to be learnt", timeout=10)
        client = support.new_client(dts.port)
        try:
            refused = []
            for m in made:
                with pytest.raises(grpc.RpcError) as raised:
                    client.schedule_new_orchestration("hello_cities", instance_id=m.instance_id)
                refused.append(raised.value.code())
            assert refused == [grpc.StatusCode.ALREADY_EXISTS] * len(made)
            assert client.schedule_new_orchestration("hello_cities", instance_id="not-stored") == "not-stored"
        finally:
            client.close()
