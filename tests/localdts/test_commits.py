"""Group commit (localdts.commits): acknowledged means written, concurrent changes share a write, failures reach
exactly the callers whose changes were in the failed write, and nothing is lost."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
import pytest
from durabletask.client import OrchestrationStatus

from localdts import LocalDts
from localdts.commits import CommitFailed, GroupCommit
from localdts.store import Change
from tests.localdts.support import RawWorker, new_client
from tests.support.wait import until

WAIT = 10.0


class Harness:
    """A change log behind a GroupCommit; ``write`` records each batch and can be held open or made to fail."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed: set[str] = set()
        self.written: list[set[str]] = []
        self.committed: list[set[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.writing = threading.Event()
        self.fail_next = False
        self.commits = GroupCommit(self.lock, lambda: bool(self.changed), self._collect, self._write,
                                   self.committed.append)

    def _collect(self) -> set[str] | None:
        if not self.changed:
            return None
        work, self.changed = self.changed, set()
        return work

    def _write(self, work: set[str]) -> None:
        self.writing.set()
        assert self.hold.wait(WAIT)
        if self.fail_next:
            self.fail_next = False
            with self.lock:
                self.changed |= work  # as the backend does: not on disk, so collected again next time
            raise OSError("disk full")
        self.written.append(set(work))

    def change(self, key: str) -> None:
        """What a gRPC call does: change under the lock, take a ticket there, wait outside it."""
        with self.lock:
            self.changed.add(key)
            ticket = self.commits.ticket()
        self.commits.wait(ticket)

    def on_disk(self) -> set[str]:
        return set().union(*self.written)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    h.commits.start()
    yield h
    h.hold.set()
    h.commits.stop()


def _in_threads(harness: Harness, keys: list[str]) -> tuple[list[threading.Thread], dict[str, BaseException]]:
    errors: dict[str, BaseException] = {}

    def run(key: str) -> None:
        try:
            harness.change(key)
        except BaseException as exc:
            errors[key] = exc
    threads = [threading.Thread(target=run, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    return threads, errors


def _changed(harness: Harness) -> set[str]:
    with harness.lock:
        return set(harness.changed)


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()


def test_a_call_returns_only_after_its_change_is_written(harness: Harness) -> None:
    harness.change("a")
    assert harness.written == [{"a"}]
    assert harness.committed == [{"a"}]


def test_changes_made_during_a_write_share_the_next_one(harness: Harness) -> None:
    harness.hold.clear()
    first, _ = _in_threads(harness, ["first"])
    assert harness.writing.wait(WAIT)
    keys = {f"k{i}" for i in range(5)}
    waiting, errors = _in_threads(harness, sorted(keys))
    until(lambda: _changed(harness) == keys, what="five changes waiting for the next write", timeout=WAIT)
    assert all(t.is_alive() for t in first + waiting)  # nobody is acknowledged before its write returns
    assert harness.written == []
    harness.hold.set()
    _join(first + waiting)
    assert not errors
    assert harness.written == [{"first"}, keys]


def test_a_failed_write_fails_its_callers_and_the_change_is_written_later(harness: Harness) -> None:
    harness.fail_next = True
    with pytest.raises(CommitFailed, match="disk full") as failed:
        harness.change("a")
    assert isinstance(failed.value.__cause__, OSError)
    assert harness.written == []
    harness.change("b")  # the next batch carries the change the failed write left behind
    assert harness.on_disk() == {"a", "b"}


def test_a_call_that_changed_nothing_does_not_wait(harness: Harness) -> None:
    with harness.lock:
        ticket = harness.commits.ticket()
    assert ticket is None
    harness.commits.wait(ticket)


def test_without_the_thread_the_caller_commits() -> None:
    h = Harness()  # never started
    h.change("a")
    assert h.written == [{"a"}]
    h.commits.start()
    h.change("b")
    h.commits.stop()
    h.change("c")  # after stop: inline again
    assert h.on_disk() == {"a", "b", "c"}


def test_stop_writes_what_is_left(harness: Harness) -> None:
    with harness.lock:
        harness.changed.add("left")  # a change without a waiting call (a timer, a sub-orchestration)
    harness.commits.stop()
    assert "left" in harness.on_disk()


def test_a_start_whose_commit_fails_is_not_acknowledged_and_is_written_later(
        dts: LocalDts, monkeypatch: pytest.MonkeyPatch) -> None:
    store = dts.backend._store
    assert store is not None
    real_write = store.write
    writes: list[int] = []

    def write_failing_once(changes: list[Change]) -> None:
        writes.append(len(changes))
        if len(writes) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real_write(changes)
    monkeypatch.setattr(store, "write", write_failing_once)
    with grpc.insecure_channel(f"localhost:{dts.port}") as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.StartInstance(pb.CreateInstanceRequest(instanceId="refused-1", name="hello_cities"))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # retryable, and said so
        assert "not acknowledged" in refused.value.details() and "disk I/O error" in refused.value.details()
        # the change was kept for the next batch
        until(lambda: len(writes) >= 2, what="the retried write", timeout=WAIT)
    dts.stop(grace=0)
    dts.start()
    client = new_client(dts.port)
    try:
        state = client.get_orchestration_state("refused-1")
    finally:
        client.close()
    assert state is not None  # written after all: refused means not acknowledged, not undone


def test_a_purge_while_the_end_is_being_written_deletes_the_instance(
        dts: LocalDts, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23's "purge deleted nothing", made deterministic: a wait for completion sees the ended instance in
    memory while its end is still being written; a purge then deletes it from memory, and the end's commit, waking
    that instance's waiters, read the row it had just written back into memory, so the purge's batch wrote the
    instance again instead of deleting it."""
    store = dts.backend._store
    assert store is not None
    real_write = store.write
    end_written, go_on = threading.Event(), threading.Event()

    def write_holding_the_end(changes: list[Change]) -> None:
        real_write(changes)
        if any(c.instance_id == "purged-1" and c.row is not None
               and c.row.status == pb.ORCHESTRATION_STATUS_COMPLETED for c in changes) and not end_written.is_set():
            end_written.set()
            go_on.wait(WAIT)  # on disk, not yet committed: the waiters are woken after this returns
    monkeypatch.setattr(store, "write", write_holding_the_end)
    client = new_client(dts.port)
    worker = RawWorker(dts.port)
    try:
        client.schedule_new_orchestration("hello_cities", instance_id="purged-1")
        item = worker.take()
        completing = threading.Thread(target=worker.complete, args=(item,))
        completing.start()
        assert end_written.wait(WAIT)
        ended = client.wait_for_orchestration_completion("purged-1", timeout=WAIT)
        assert ended is not None and ended.runtime_status == OrchestrationStatus.COMPLETED
        purged: list[int] = []

        def purge() -> None:
            purged.append(client.purge_orchestration("purged-1").deleted_instance_count)
        purging = threading.Thread(target=purge)
        purging.start()
        # the purge has deleted it in memory and waits for its own commit, queued behind the held one
        until(lambda: "purged-1" in dts.backend._pending.deleted, what="the purge, waiting for its commit",
              timeout=WAIT)
        go_on.set()
        purging.join(WAIT)
        completing.join(WAIT)
        assert purged == [1]
        assert client.get_orchestration_state("purged-1") is None
        dts.stop(grace=0)
        dts.start()
        assert client.get_orchestration_state("purged-1") is None  # and not back from the disk either
    finally:
        go_on.set()
        worker.close()
        client.close()


def test_a_read_shows_nothing_that_is_not_on_disk(dts: LocalDts, monkeypatch: pytest.MonkeyPatch) -> None:
    """test_restart's pending approval, made deterministic: a client saw the instance's custom status while the
    change that set it was not written yet; localdts was killed, and after the restart the status it had seen was
    gone. While the disk refuses an instance's change, a read of that instance is refused too, as a crash would
    undo what it showed; once the change is written, the read shows it."""
    store = dts.backend._store
    assert store is not None
    real_write = store.write
    refusing = threading.Event()

    def write_unless_refusing(changes: list[Change]) -> None:
        if refusing.is_set():
            raise sqlite3.OperationalError("disk I/O error")
        real_write(changes)
    monkeypatch.setattr(store, "write", write_unless_refusing)
    worker = RawWorker(dts.port)
    with grpc.insecure_channel(f"localhost:{dts.port}") as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        try:
            stub.StartInstance(pb.CreateInstanceRequest(instanceId="read-1", name="hello_cities"))
            item = worker.take()
            refusing.set()
            with pytest.raises(grpc.RpcError) as refused:
                worker.complete(item)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # not acknowledged, kept in memory
            with pytest.raises(grpc.RpcError) as unread:
                stub.GetInstance(pb.GetInstanceRequest(instanceId="read-1"))  # it answered COMPLETED
            assert unread.value.code() == grpc.StatusCode.UNAVAILABLE
            refusing.clear()
            read = stub.GetInstance(pb.GetInstanceRequest(instanceId="read-1"))
            assert read.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
        finally:
            refusing.clear()
            worker.close()
