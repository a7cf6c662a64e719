"""The SDK's in-memory backend, made durable and closer to DTS, by overriding its hooks (not its gRPC service).

What changes against ``durabletask.testing.InMemoryOrchestrationBackend``:

- **Durable** (with a :class:`~localdts.store.Store`): every call that changes an instance returns only once the
  change is committed to SQLite (group commit on a thread of its own, :mod:`localdts.commits`: concurrent calls
  share one commit and one fsync). Waiters on a state are woken only after the commit, and a read of an instance
  waits for its changes to be written, so nobody hears of a completion, or sees a state, that a crash could
  undo. On start, the running instances are loaded and the owed work is derived from each history: activities
  re-queued, timers re-armed, sub-orchestrations watched.
- **Cost flat in history** (with a store): an ended instance leaves memory once written (:mod:`localdts.instances`)
  and queries, lists and purges page in SQL (:mod:`localdts.queries`); a start of a new id does not read the
  store once a thread has learnt the stored ids after start-up (:meth:`DurableBackend._learn_stored_ids`).
- **Bounded** (:mod:`localdts.limits`): no work item a worker could not receive is sent; payloads, raised events and
  unanswered deliveries are bounded, so one instance cannot stall the others.
- **Scheduled starts**: an instance with a future ``scheduledStartTimestamp`` stays PENDING and undispatched
  until then.
- **Trace context**: ``parentTraceContext`` reaches ``ExecutionStarted``, ``TaskScheduled`` and each
  ``ActivityRequest``; the worker's ``orchestrationTraceContext`` is kept and handed back on every episode.
- **Timestamps**: every history event gets the time it happened, not 1970-01-01.
- **Re-dispatch**: work items are leased to the stream that took them; when that stream ends before the work is
  completed, the work is offered again (an orchestration with a fresh completion token, so a late answer of the
  lost worker is ignored as stale; an activity answered twice counts once), alone: which of a stream's items
  ended it is unknown, so only a stream that ends holding one counts against it (:mod:`localdts.suspects`).
- One timer thread for all timers instead of a thread per timer; no ``SO_REUSEPORT``; a big gRPC pool for
  streams and waits and a small one for short calls (:mod:`localdts.pools`).

Entities are served exactly as by the SDK backend, in memory only.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

import durabletask.internal.helpers as helpers
import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from durabletask.testing.in_memory_backend import (
    ActivityWorkItem,
    InMemoryOrchestrationBackend,
    OrchestrationInstance,
    StateWaiter,
)

from . import history as hist
from . import limits, sdkcheck
from .commits import CommitFailed, GroupCommit, Ticket
from .instances import Instances
from .limits import instance_id_problem
from .pools import DEFAULT_CALL_WORKERS, OnCallPool
from .queries import BadToken, CompletedQuery, InstanceQuery, PurgeFilter, encode_token
from .store import Change, InstanceRow, Store, WriteFailed
from .suspects import Stream, Suspect, Suspects, Turn, turn
from .timers import TimerQueue

log = logging.getLogger("localdts.backend")
R = TypeVar("R")

DEFAULT_MAX_WORKERS = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Learning the stored ids after start-up: 100 ids, then 5 ms of pause, so that it takes a few % of one core and a
# start + status read meanwhile (which reads the store, as before) costs what it does without it. A million ids
# take ~55 s so; without pauses 2.1 s, but a start + status read meanwhile took 3-4x as long (bench.localdts_history).
ID_PAGE = 100
ID_PAUSE = 0.005
PURGE_BATCH = 10_000  # instances one PurgeInstances-by-filter call deletes at most (then isComplete is false)
_TERMINAL = (pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_TERMINATED)


@dataclass
class _ActivityLease:
    stream: Stream
    item: ActivityWorkItem


@dataclass
class _Saved:
    """How much of an instance's history is on disk: the instance object, the length, and its last event."""

    instance: OrchestrationInstance
    length: int
    last: pb.HistoryEvent | None


@dataclass
class _Size:
    """The byte size of an instance's history, as of its first ``length`` events (added to, not recounted)."""

    instance: OrchestrationInstance
    length: int
    last: pb.HistoryEvent | None
    total: int


@dataclass
class _Pending:
    dirty: set[str] = field(default_factory=set)
    notify: set[str] = field(default_factory=set)
    # Purged: the only changes that delete. A changed instance that is merely not in memory (it ended and left
    # memory, then a no-op touched it) is not deleted: it is already on disk as it is.
    deleted: set[str] = field(default_factory=set)


@dataclass
class _Work:
    """One batch: the rows to write, and what they were taken from (to put back if the write fails)."""

    pending: _Pending
    changes: list[Change]


def _us(moment: datetime | None) -> int | None:
    """Microseconds since the epoch, exactly (a float timestamp can be 1 µs off, and filters compare these)."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _is_terminal(status: int) -> bool:
    return status in _TERMINAL


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _Gate:
    """A work-item call's context as the SDK's dispatch loop sees it: active only while the stream's turn is to
    take queued work, so that the loop returns (to offer a suspect alone, or to wait) instead of taking more."""

    def __init__(self, context: grpc.ServicerContext, open_: Callable[[], bool]) -> None:
        self._context = context
        self._open = open_

    def is_active(self) -> bool:
        return bool(self._context.is_active()) and self._open()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def open_server(servicer: object, host: str, port: int, max_workers: int = DEFAULT_MAX_WORKERS,
                call_workers: int = DEFAULT_CALL_WORKERS
                ) -> tuple[grpc.Server, list[futures.ThreadPoolExecutor], int]:
    """A gRPC server for ``servicer`` bound to ``host:port`` (not started yet), its two pools, and the port.

    Raises OSError if the port cannot be bound.
    """
    pools = [
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="localdts-grpc"),
        futures.ThreadPoolExecutor(max_workers=call_workers, thread_name_prefix="localdts-call"),
    ]
    server = grpc.server(pools[0], options=[
        ("grpc.so_reuseport", 0),
        # Our clients ping every 10 s to find half-open links (sbworker.core.clients): allow it, idle or not.
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC's BDP probes come on top of those pings; with the default of 2 "strikes" a busy machine saw a
        # worker's stream closed with GOAWAY too_many_pings mid-test. A local backend never hangs up on a
        # client for pinging.
        ("grpc.http2.max_ping_strikes", 0),
        # And we ping them: a worker stream on a half-open link ends within 15 s, so the work item it held is
        # offered to another stream instead of waiting for an answer that cannot come.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.max_receive_message_length", limits.SERVER_MAX_RECEIVE_BYTES),
    ])
    add = cast(Callable[[Any, grpc.Server], None], stubs.add_TaskHubSidecarServiceServicer_to_server)
    add(OnCallPool(servicer, pools[1]), server)
    address = f"{_grpc_host(host)}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        bound, error = 0, f": {exc}"
    else:
        error = ""
    if not bound:
        server.stop(None)
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        raise OSError(f"cannot listen on {address}{error}")
    return server, pools, bound


class DurableBackend(InMemoryOrchestrationBackend):
    """The SDK backend plus durability, scheduled starts, trace context, timestamps and re-dispatch.

    ``store`` None keeps everything in memory (like the SDK backend, with the other improvements).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, store: Store | None = None,
                 max_workers: int = DEFAULT_MAX_WORKERS, call_workers: int = DEFAULT_CALL_WORKERS,
                 max_work_item_bytes: int = limits.MAX_WORK_ITEM_BYTES) -> None:
        # The SDK's own bound (10,000 events) aborts the completion and leaves the instance in flight for ever;
        # ours is on bytes and ends the instance (see _over_the_limit).
        super().__init__(port=port, max_history_size=sys.maxsize)
        sdkcheck.check(InMemoryOrchestrationBackend, self)
        # Running instances in memory; ended ones in the store, read back while in use (see _evict_ended).
        self._live = Instances(self._load_ended if store is not None else None)
        self._instances = cast(dict[str, OrchestrationInstance], self._live)  # what the SDK's code works on
        self._host = host
        self._max_work_item_bytes = max_work_item_bytes
        self._sizes: dict[str, _Size] = {}
        # Deliveries in a row that got no answer, per orchestration and per activity (instance id, task id).
        self._unanswered: dict[str, int] = {}
        self._unanswered_activities: dict[tuple[str, int], int] = {}
        self._store = store
        self._max_workers = max_workers
        self._call_workers = call_workers
        self._pools: list[futures.ThreadPoolExecutor] = []
        self._timers = TimerQueue()
        self._learning: threading.Thread | None = None  # of the stored ids, once per backend (see activate)
        self._stop_learning = threading.Event()
        self._pending = _Pending()
        self._writing: _Pending | None = None  # what the batch being written was taken from
        self._saved: dict[str, _Saved] = {}
        self._start_at: dict[str, datetime] = {}
        self._orch_trace: dict[str, pb.OrchestrationTraceContext] = {}
        self._streams = itertools.count(1)
        self._open_streams: set[Stream] = set()
        self._suspects = Suspects()
        # Notified when a stream may take something it had to wait for (a lease went, a suspect came).
        self._dispatch_changed = threading.Condition(self._lock)
        self._orch_leases: dict[str, tuple[Stream, str]] = {}
        self._activity_leases: dict[str, _ActivityLease] = {}
        self._activity_tokens = itertools.count(1)
        # Sub-orchestration id -> (parent id, task id) of the parents waiting for its end (see _report_to_parents).
        self._parents: dict[str, list[tuple[str, int]]] = {}
        self._commits: GroupCommit[_Work] | None = None
        if store is not None:
            self._commits = GroupCommit(self._lock, self._changed, self._collect, partial(self._write, store),
                                        self._committed, expected=(WriteFailed,))
        # Tokens of an earlier run (boot) can never match this run's, so a late answer is always stale.
        self._next_completion_token = (store.boot if store else 0) * 10**12 + 1
        if store is not None:
            self._load(store)

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> str:
        """Bind ``host:port`` (port 0: any free one) and serve; raises OSError if the port cannot be bound."""
        server, self._pools, self._port = open_server(self, self._host, self._port, self._max_workers,
                                                      self._call_workers)
        self._server = server
        self.activate()
        server.start()
        log.info("localdts backend serving on %s:%d", self._host, self._port)
        return f"localhost:{self._port}"

    def activate(self) -> None:
        """Start what runs beside the gRPC calls (commits, timers); ``start`` does it, or whoever serves this
        backend's calls (:class:`~localdts.hubs.TaskHubs`, one backend per task hub)."""
        self._shutdown_event.clear()
        if self._commits is not None:
            self._commits.start()
        self._timers.start()
        if self._store is not None and self._learning is None:
            self._learning = threading.Thread(target=self._learn_stored_ids, args=(self._store,),
                                              name="localdts-stored-ids", daemon=True)
            self._learning.start()

    def quiesce(self) -> None:
        """End this backend's work-item streams (the server is about to stop)."""
        self._shutdown_event.set()
        self._work_available.set()
        with self._lock:
            self._dispatch_changed.notify_all()

    def stop(self, grace: float | None = None) -> None:
        super().stop(grace)
        self._shutdown_pools()
        self._timers.stop()
        self._stop_learning.set()
        if self._learning is not None:  # before the store closes
            self._learning.join()
        if self._commits is not None:
            self._commits.stop()

    def _shutdown_pools(self) -> None:
        """The server is stopped: let the pools' idle threads end (a restart makes new pools)."""
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
        self._pools = []

    # --- loading ---------------------------------------------------------------------------------------------

    def _new_token(self) -> int:
        token = self._next_completion_token
        self._next_completion_token += 1
        return token

    def _load(self, store: Store) -> None:
        loaded: list[OrchestrationInstance] = []
        with self._lock:
            for row in store.load_running():
                inst = self._instance_from(row)
                iid = inst.instance_id
                self._instances[iid] = inst
                self._saved[iid] = _Saved(inst, len(inst.history), inst.history[-1] if inst.history else None)
                if row.trace is not None:
                    self._orch_trace[iid] = pb.OrchestrationTraceContext.FromString(row.trace)
                start_at = _dt(row.start_at_us)
                if start_at is not None:
                    self._start_at[iid] = start_at
                    self._timers.add(start_at.timestamp(), partial(self._begin, inst))
                loaded.append(inst)
            for inst in loaded:
                if not _is_terminal(inst.status):
                    self._resume_owed_work(inst)
            self._pending = _Pending()  # what was just loaded is what is on disk
            for inst in loaded:  # e.g. written by an earlier version, or with a higher --max-work-item-bytes
                if not _is_terminal(inst.status):
                    self._end_if_over_the_limit(inst)
        log.info("localdts loaded %d running instance(s) from %s", len(loaded), store.path)

    def _learn_stored_ids(self, store: Store) -> None:
        """In the background after start-up: learn every id in the store, so that from then on a start of a new
        id does not read it (until then every start does, as an id that is not in memory may be stored)."""
        began = time.monotonic()
        try:
            with store.all_ids(ID_PAGE) as (count, pages):
                if not self._live.cover_store(count, pages, self._lock, self._stop_learning, ID_PAUSE):
                    return
        except sqlite3.Error as exc:
            log.warning("localdts: could not read the instance ids in %s (%s); starts keep reading the store",
                        store.path, exc)
            return
        log.info("localdts learnt the %d instance id(s) in %s in %.2f s", count, store.path,
                 time.monotonic() - began)

    def _load_ended(self, instance_id: str) -> OrchestrationInstance | None:
        """Under the lock: an instance that is not in memory (so it has ended), read back whole to be used."""
        assert self._store is not None
        if self._purged(instance_id):
            return None
        row = self._store.row(instance_id, history=True)
        if row is None:
            return None
        inst = self._instance_from(row)
        self._saved[instance_id] = _Saved(inst, len(inst.history), inst.history[-1] if inst.history else None)
        return inst

    def _peek(self, instance_id: str) -> OrchestrationInstance | None:
        """Under the lock or not: the instance in memory, else its stored state without history (not kept)."""
        inst = self._live.in_memory(instance_id)
        if inst is not None or self._store is None or self._purged(instance_id):
            return inst
        row = self._store.row(instance_id)
        return self._instance_from(row, whole=False) if row is not None else None

    def _purged(self, instance_id: str) -> bool:
        """Purged, though its row may still be on disk (the deletion is not written yet): gone for every reader.

        Read back into memory then (waking the waiters of the batch that wrote its end does), it would still be there
        when the purge's batch is collected, and that batch would write the instance instead of deleting it.
        """
        writing = self._writing
        return instance_id in self._pending.deleted or (writing is not None and instance_id in writing.deleted)

    def _instance_from(self, row: InstanceRow, whole: bool = True) -> OrchestrationInstance:
        """``whole`` False: only what a status or a listing shows (no events, no completion token)."""
        created = _dt(row.created_us)
        updated = _dt(row.updated_us)
        assert created is not None and updated is not None
        return OrchestrationInstance(
            instance_id=row.instance_id, name=row.name, status=cast(pb.OrchestrationStatus, row.status),
            version=row.version, input=row.input, output=row.output, custom_status=row.custom_status,
            created_at=created, last_updated_at=updated, completed_at=_dt(row.completed_us),
            failure_details=pb.TaskFailureDetails.FromString(row.failure) if row.failure is not None else None,
            history=[pb.HistoryEvent.FromString(b) for b in row.history],
            pending_events=hist.decode(row.pending) if whole else [],
            completion_token=self._new_token() if whole else 0,
            tags=json.loads(row.tags) if row.tags else None,
        )

    def _resume_owed_work(self, inst: OrchestrationInstance) -> None:
        """Re-queue what the history says is still owed to a running instance (called under the lock)."""
        iid = inst.instance_id
        for event in hist.owed_activities(inst.history, inst.pending_events):
            scheduled = event.taskScheduled
            self._activity_queue.append(ActivityWorkItem(
                instance_id=iid, name=scheduled.name, task_id=event.eventId,
                input=scheduled.input.value if scheduled.HasField("input") else None,
                completion_token=inst.completion_token,
                version=scheduled.version.value if scheduled.HasField("version") else None,
            ))
            self._work_available.set()
        for timer in hist.owed_timers(inst.history, inst.pending_events):
            self._arm_timer(inst, timer.timer_id, timer.fire_at)
        for task_id, sub_id in hist.owed_sub_orchestrations(inst.history, inst.pending_events):
            self._watch_sub_orchestration(iid, sub_id, task_id)
        if inst.pending_events:
            self._enqueue_orchestration(iid)

    # --- persistence -----------------------------------------------------------------------------------------

    def _touch(self, instance_ids: Iterable[str]) -> None:
        """After a change (under the lock): stamp new events and mark the instances for the next flush."""
        for iid in instance_ids:
            inst = self._live.in_memory(iid)
            if inst is not None:
                hist.stamp(inst.pending_events)
                self._stamp_tail(inst.history)
            if self._store is not None:
                self._pending.dirty.add(iid)

    @staticmethod
    def _stamp_tail(events: list[pb.HistoryEvent]) -> None:
        """Events appended by this episode sit at the end and are the only ones still unstamped."""
        unstamped: list[pb.HistoryEvent] = []
        for event in reversed(events):
            if event.timestamp.seconds or event.timestamp.nanos:
                break
            unstamped.append(event)
        hist.stamp(unstamped)

    def _snapshot(self, iid: str, deleted: set[str]) -> Change | None:
        """The row to write for a changed instance, a deletion if it was purged, None if there is nothing to write."""
        inst = self._live.in_memory(iid)
        if inst is None:
            self._saved.pop(iid, None)
            return Change(iid, None) if iid in deleted else None
        events = inst.history
        saved = self._saved.get(iid)
        if saved is not None and saved.instance is inst and hist.extends(events, saved.length, saved.last):
            start, rewrite = saved.length, False
        else:
            start, rewrite = 0, True
        new = [events[i].SerializeToString() for i in range(start, len(events))]
        self._saved[iid] = _Saved(inst, len(events), events[-1] if events else None)
        trace = self._orch_trace.get(iid)
        row = InstanceRow(
            instance_id=iid, name=inst.name, status=int(inst.status), version=inst.version, input=inst.input,
            output=inst.output, custom_status=inst.custom_status,
            created_us=_us(inst.created_at) or 0, updated_us=_us(inst.last_updated_at) or 0,
            completed_us=_us(inst.completed_at),
            failure=inst.failure_details.SerializeToString() if inst.failure_details is not None else None,
            tags=json.dumps(inst.tags) if inst.tags else None,
            # Events of a work item in flight are stored as pending: after a crash they are dispatched again.
            pending=hist.encode([*inst.dispatched_events, *inst.pending_events]),
            trace=trace.SerializeToString() if trace is not None else None,
            start_at_us=_us(self._start_at.get(iid)),
        )
        return Change(iid, row, history_from=start, new_events=new, rewrite=rewrite)

    def _changed(self) -> bool:
        return bool(self._pending.dirty or self._pending.notify)

    def _collect(self) -> _Work | None:
        """Under the lock: take out everything changed since the last batch, as rows to write."""
        if not self._changed():
            return None
        pending, self._pending = self._pending, _Pending()
        self._writing = pending
        changes = (self._snapshot(iid, pending.deleted) for iid in pending.dirty)
        return _Work(pending, [change for change in changes if change is not None])

    def _write(self, store: Store, work: _Work) -> None:
        try:
            if work.changes:
                store.write(work.changes)
        except BaseException:
            with self._lock:  # not on disk: write these instances whole next time
                self._writing = None
                for iid in work.pending.dirty:
                    self._saved.pop(iid, None)
                self._pending.dirty |= work.pending.dirty
                self._pending.notify |= work.pending.notify
                self._pending.deleted |= work.pending.deleted
            raise

    def _committed(self, work: _Work) -> None:
        """Under the lock, once on disk: wake those waiting for these instances' states, then let ended ones go."""
        self._writing = None
        for iid in work.pending.notify:
            self._state_settled(iid)
        self._evict_ended([*work.pending.dirty, *self._live.loaded])

    def _evict_ended(self, instance_ids: Iterable[str]) -> None:
        """Under the lock: drop from memory the ended instances whose every change is on disk and that nothing
        is using (queued, in flight, waited for). Memory then holds what running instances need, however many
        instances ever ran; the store answers for the others."""
        for iid in set(instance_ids):
            inst = self._live.in_memory(iid)
            if inst is None or not _is_terminal(inst.status) or iid in self._pending.dirty \
                    or iid in self._orchestration_in_flight or iid in self._orchestration_queue_set \
                    or iid in self._suspects or iid in self._state_waiters:
                continue
            self._live.evict(iid)
            self._forget(iid)

    def _forget(self, iid: str) -> None:
        """Under the lock: drop what is kept beside an instance that is no longer in memory."""
        for kept in (self._saved, self._sizes, self._orch_trace, self._start_at, self._unanswered):
            kept.pop(iid, None)

    def _state_settled(self, instance_id: str) -> None:
        """Under the lock, once a state change is final (committed, when durable): tell who waits for it."""
        InMemoryOrchestrationBackend._notify_waiters(self, instance_id)
        inst = self._live.in_memory(instance_id)
        if inst is not None and _is_terminal(inst.status) and instance_id in self._parents:
            self._report_to_parents(inst)

    def _ticket(self) -> Ticket | None:
        """Under the lock, after a change: what to wait for (see :meth:`_settle`); None in memory mode."""
        return self._commits.ticket() if self._commits is not None else None

    def _settle(self, ticket: Ticket | None, context: grpc.ServicerContext | None = None,
                background: bool = False) -> None:
        """Without the lock: return once the change behind ``ticket`` is committed.

        If it could not be (the disk refused): a gRPC call ends UNAVAILABLE with the reason (not acknowledged;
        the change is kept and written when the disk allows, so a retry is safe); a ``background`` change (a
        timer) waits for the commit thread; anything else raises :class:`CommitFailed`.
        """
        if self._commits is None:
            return
        try:
            self._commits.wait(ticket)
        except CommitFailed as exc:
            if background:
                return
            if context is None:
                raise
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"not acknowledged: localdts {exc.__cause__ or exc}. The change is kept and written when "
                          "the disk allows; retrying is safe")

    def flush(self) -> None:
        """Commit everything changed so far and wake the waiters of what was committed; without the lock."""
        with self._lock:
            ticket = self._ticket()
        self._settle(ticket)

    def _changing(self, context: grpc.ServicerContext, call: Callable[[], R],
                  instance_ids: Callable[[R], Iterable[str]]) -> R:
        """Run a state-changing SDK call, stamp and mark what it touched, and commit before returning."""
        with self._lock:
            result = call()
            self._touch(instance_ids(result))
            ticket = self._ticket()
        self._settle(ticket, context)
        return result

    # --- hooks of the SDK backend ----------------------------------------------------------------------------

    def _enqueue_orchestration(self, instance_id: str) -> None:
        # Every change to an instance other than the one a call is about (a sent event, a sub-orchestration,
        # a fired timer) ends here, so this is where such changes are stamped and marked for the next flush.
        inst = self._live.in_memory(instance_id)
        if inst is not None:
            hist.stamp(inst.pending_events)
        if self._store is not None:
            self._pending.dirty.add(instance_id)
            if self._commits is not None:  # a change made off a gRPC call (a timer, a sub-orchestration)
                self._commits.nudge()
        if instance_id in self._start_at:
            return  # not before its scheduled start; _begin enqueues it then
        if instance_id in self._suspects:
            return  # offered alone, by GetWorkItems
        super()._enqueue_orchestration(instance_id)

    def _notify_waiters(self, instance_id: str) -> None:
        if self._store is None:
            self._state_settled(instance_id)
        else:
            self._pending.notify.add(instance_id)  # after the commit, in _committed()

    def _create_instance_internal(self, instance_id: str, name: str, encoded_input: str | None = None,
                                  version: str | None = None) -> None:
        # Sub-orchestrations (and restarts, rewinds) are created here: refuse the ids DTS refuses. The SDK turns
        # the error into a failed sub-orchestration for the parent.
        problem = instance_id_problem(instance_id)
        if problem is not None:
            raise ValueError(problem)
        super()._create_instance_internal(instance_id, name, encoded_input, version=version)

    def _watch_sub_orchestration(self, parent_instance_id: str, sub_instance_id: str, task_id: int) -> None:
        """Under the lock: report the sub-orchestration's end to its parent when it comes, with no thread.

        The SDK backend starts a thread per sub-orchestration that waits 30 s for the end and then gives up, so
        a child running longer never reported to its parent.
        """
        self._parents.setdefault(sub_instance_id, []).append((parent_instance_id, task_id))
        sub = self._instances.get(sub_instance_id)
        if sub is not None and _is_terminal(sub.status):
            self._report_to_parents(sub)

    def _report_to_parents(self, sub: OrchestrationInstance) -> None:
        """Under the lock: the sub-orchestration ended; hand its result (or failure) to each parent still running."""
        for parent_id, task_id in self._parents.pop(sub.instance_id, []):
            parent = self._live.in_memory(parent_id)
            if parent is None or _is_terminal(parent.status):
                continue
            if sub.status == pb.ORCHESTRATION_STATUS_COMPLETED:
                event = helpers.new_sub_orchestration_completed_event(task_id, sub.output)
            else:
                failure = pb.TaskFailureDetails()
                if sub.failure_details is not None:
                    failure.CopyFrom(sub.failure_details)
                else:
                    failure.errorType, failure.errorMessage = "SubOrchestrationFailed", (
                        f"sub-orchestration {sub.instance_id} ended {pb.OrchestrationStatus.Name(sub.status)}")
                failed = pb.SubOrchestrationInstanceFailedEvent(taskScheduledId=task_id, failureDetails=failure)
                event = pb.HistoryEvent(eventId=-1, subOrchestrationInstanceFailed=failed)
            parent.pending_events.append(event)
            parent.last_updated_at = datetime.now(UTC)
            self._enqueue_orchestration(parent_id)

    def _process_create_timer_action(self, instance: OrchestrationInstance, action: pb.OrchestratorAction) -> None:
        fire_at = action.createTimer.fireAt.ToDatetime(tzinfo=UTC)
        instance.history.append(helpers.new_timer_created_event(action.id, fire_at))
        if instance.status == pb.ORCHESTRATION_STATUS_PENDING:
            instance.status = pb.ORCHESTRATION_STATUS_RUNNING
        self._arm_timer(instance, action.id, fire_at)

    def _process_schedule_task_action(self, instance: OrchestrationInstance, action: pb.OrchestratorAction) -> None:
        super()._process_schedule_task_action(instance, action)
        scheduled = instance.history[-1].taskScheduled
        task = action.scheduleTask
        if task.HasField("parentTraceContext"):
            scheduled.parentTraceContext.CopyFrom(task.parentTraceContext)
        if task.HasField("version"):
            scheduled.version.CopyFrom(task.version)
        for key, value in task.tags.items():
            scheduled.tags[key] = value

    def _process_create_sub_orchestration_action(self, instance: OrchestrationInstance,
                                                 action: pb.OrchestratorAction) -> None:
        create = action.createSubOrchestration
        existing = self._instances.get(create.instanceId)
        super()._process_create_sub_orchestration_action(instance, action)
        sub = self._instances.get(create.instanceId)
        created = sub is not None and sub is not existing
        started = hist.execution_started(sub.pending_events) if created and sub is not None else None
        if started is not None:  # as DTS: the child's start names its parent (ctx.parent_instance_id)
            info = started.executionStarted.parentInstance
            info.taskScheduledId = action.id
            info.name.value = instance.name
            if instance.version:
                info.version.value = instance.version
            info.orchestrationInstance.instanceId = instance.instance_id
        if not create.HasField("parentTraceContext"):
            return
        for event in reversed(instance.history):
            if event.eventId == action.id and event.HasField("subOrchestrationInstanceCreated"):
                event.subOrchestrationInstanceCreated.parentTraceContext.CopyFrom(create.parentTraceContext)
                break
        if started is not None:
            started.executionStarted.parentTraceContext.CopyFrom(create.parentTraceContext)

    def _process_complete_orchestration_action(self, instance: OrchestrationInstance,
                                               complete_action: pb.CompleteOrchestrationAction) -> None:
        started = hist.execution_started(instance.history)
        parent = None
        if started is not None and started.executionStarted.HasField("parentTraceContext"):
            parent = pb.TraceContext()
            parent.CopyFrom(started.executionStarted.parentTraceContext)
        super()._process_complete_orchestration_action(instance, complete_action)
        if complete_action.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW and parent is not None:
            restarted = hist.execution_started(instance.pending_events)
            if restarted is not None:  # the next execution stays in the caller's trace
                restarted.executionStarted.parentTraceContext.CopyFrom(parent)

    # --- bounds: one instance must never stall the others -----------------------------------------------------

    def _history_bytes(self, inst: OrchestrationInstance) -> int:
        """Under the lock: the history's size in a work item, counting only the events added since last time."""
        events = inst.history
        mark = self._sizes.get(inst.instance_id)
        if mark is not None and mark.instance is inst and hist.extends(events, mark.length, mark.last):
            total = mark.total + limits.events_size(events[mark.length:])
        else:
            total = limits.events_size(events)
        self._sizes[inst.instance_id] = _Size(inst, len(events), events[-1] if events else None, total)
        return total

    def _work_item_bytes(self, inst: OrchestrationInstance, extra: int = 0) -> int:
        """Under the lock: about how big the instance's next work item is (a little over, never under)."""
        waiting = limits.events_size([*inst.dispatched_events, *inst.pending_events])
        return self._history_bytes(inst) + waiting + extra + limits.WORK_ITEM_FRAMING_BYTES

    def _end_if_over_the_limit(self, inst: OrchestrationInstance) -> bool:
        """Under the lock: end a running instance whose next work item no worker could receive."""
        size = self._work_item_bytes(inst)
        if size <= self._max_work_item_bytes:
            return False
        self._end(inst, limits.WORK_ITEM_TOO_LARGE, limits.work_item_message(size, self._max_work_item_bytes))
        return True

    def _end(self, inst: OrchestrationInstance, error_type: str, message: str) -> None:
        """Under the lock: the instance cannot go on; end it here, without its worker, and tell who waits.

        It ends FAILED with ``error_type`` and ``message``, unless a terminate request is among its unprocessed
        events: then it ends TERMINATED as asked. Unprocessed events are dropped (as for any ended instance), its
        queued activities are withdrawn, and a late answer from a worker that still holds it is stale.
        """
        iid = inst.instance_id
        waiting = [*inst.dispatched_events, *inst.pending_events]
        terminate = next((e.executionTerminated for e in waiting if e.HasField("executionTerminated")), None)
        now = datetime.now(UTC)
        if terminate is not None:
            inst.status = pb.ORCHESTRATION_STATUS_TERMINATED
            inst.output = terminate.input.value if terminate.HasField("input") else None
            inst.failure_details = None
            log.warning("localdts: instance %s terminated without its worker: %s", iid, message)
        else:
            inst.status = pb.ORCHESTRATION_STATUS_FAILED
            inst.output = None
            inst.failure_details = limits.failure(error_type, f"localdts ended instance {iid}: {message}")
            log.warning("localdts: instance %s FAILED: %s", iid, message)
        inst.completed_at = inst.last_updated_at = now
        inst.history.append(helpers.new_execution_completed_event(inst.status, inst.output, inst.failure_details))
        inst.dispatched_events.clear()
        inst.pending_events.clear()
        self._orchestration_in_flight.discard(iid)
        self._orch_leases.pop(iid, None)
        self._suspects.withdraw(iid)
        self._dispatch_changed.notify_all()
        self._unanswered.pop(iid, None)
        inst.completion_token = self._new_token()
        queued = [a for a in self._activity_queue if a.instance_id != iid]
        if len(queued) != len(self._activity_queue):
            self._activity_queue.clear()
            self._activity_queue.extend(queued)
        self._touch([iid])
        self._notify_waiters(iid)
        if self._commits is not None:
            self._commits.nudge()

    def _unanswered_again(self, iid: str) -> int:
        """Under the lock: one more delivery of the orchestration got no answer; how many in a row now."""
        count = self._unanswered.get(iid, 0) + 1
        self._unanswered[iid] = count
        return count

    def _never_answered(self, inst: OrchestrationInstance, count: int) -> None:
        self._end(inst, limits.NEVER_ANSWERED,
                  f"its work item was offered {count} times in a row and never answered (the worker's stream ended "
                  "or it abandoned the item each time): a worker cannot receive or run it")

    # --- timers and scheduled starts -------------------------------------------------------------------------

    def _arm_timer(self, inst: OrchestrationInstance, timer_id: int, fire_at: datetime) -> None:
        self._timers.add(fire_at.timestamp(), partial(self._fire_timer, inst, timer_id, fire_at))

    def _fire_timer(self, inst: OrchestrationInstance, timer_id: int, fire_at: datetime) -> None:
        with self._lock:
            iid = inst.instance_id
            if self._live.in_memory(iid) is not inst or _is_terminal(inst.status):
                return
            known = [*inst.dispatched_events, *inst.pending_events]
            owed = hist.owed_timers(inst.history, known)
            if not any(t.timer_id == timer_id and t.fire_at == fire_at for t in owed):
                return  # fired already, or a timer of an earlier execution (continue-as-new)
            inst.pending_events.append(helpers.new_timer_fired_event(timer_id, fire_at))
            inst.last_updated_at = datetime.now(UTC)
            self._enqueue_orchestration(iid)
            ticket = self._ticket()
        self._settle(ticket, background=True)

    def _begin(self, inst: OrchestrationInstance) -> None:
        """A scheduled start is due: let the instance be dispatched."""
        with self._lock:
            iid = inst.instance_id
            if self._live.in_memory(iid) is not inst or self._start_at.pop(iid, None) is None:
                return
            if self._store is not None:
                self._pending.dirty.add(iid)
            if inst.pending_events and not _is_terminal(inst.status):
                self._enqueue_orchestration(iid)
            ticket = self._ticket()
        self._settle(ticket, background=True)

    # --- gRPC: work items ------------------------------------------------------------------------------------

    def GetWorkItems(self, request: pb.GetWorkItemsRequest,
                     context: grpc.ServicerContext) -> Iterator[pb.WorkItem]:
        """Queued work through the SDK's dispatch loop; suspects alone, by ours (:mod:`localdts.suspects`)."""
        orchestrations, activities, _ = self._parse_work_item_filters(request)
        stream = Stream(next(self._streams), orchestrations, activities)
        with self._lock:
            self._open_streams.add(stream)
        context.add_callback(lambda: self._release(stream))
        gate = _Gate(context, lambda: self._may_take_queued(stream))
        try:
            while context.is_active() and not self._shutdown_event.is_set():
                with self._lock:
                    now = self._turn(stream)
                    item = self._offer_alone(stream) if now is Turn.SUSPECT else None
                    if now is Turn.WAIT:
                        self._dispatch_changed.wait(timeout=1.0)
                if item is not None:
                    yield item
                elif now is Turn.QUEUED:
                    yield from self._offer_queued(request, gate, stream)
        finally:
            self._release(stream)

    def _offer_queued(self, request: pb.GetWorkItemsRequest, gate: _Gate,
                      stream: Stream) -> Iterator[pb.WorkItem]:
        """Queued work items, until the stream's turn is no longer to take them (the gate closes)."""
        for item in super().GetWorkItems(request, cast(grpc.ServicerContext, gate)):
            with self._lock:
                if self._undeliverable(item):
                    continue
                self._lease(item, stream)
            yield item

    def _may_take_queued(self, stream: Stream) -> bool:
        """The gate's check, before each dispatch of the SDK's loop: without the lock while nobody is a suspect (the
        stream's own ``alone`` mark is set by this same thread; a suspect that comes meanwhile waits one item)."""
        if not self._suspects and not stream.alone:
            return True
        return self._turn(stream) is Turn.QUEUED

    def _turn(self, stream: Stream) -> Turn:
        with self._lock:
            return turn(stream, self._open_streams, self._held, self._wants)

    def _held(self, stream: Stream) -> int:
        """Under the lock: how many work items the stream took and has not answered."""
        held = sum(1 for lease in self._activity_leases.values() if lease.stream is stream)
        return held + sum(1 for iid, (holder, token) in self._orch_leases.items()
                          if holder is stream and self._holds(iid, token))

    def _holds(self, iid: str, token: str) -> bool:
        """Under the lock: whether the orchestration work item leased with ``token`` still awaits its answer."""
        inst = self._live.in_memory(iid)
        return inst is not None and iid in self._orchestration_in_flight and str(inst.completion_token) == token

    def _wants(self, stream: Stream) -> bool:
        return self._suspects.any_for(partial(self._accepts, stream))

    def _accepts(self, stream: Stream, suspect: Suspect) -> bool:
        """Whether the stream's worker filters let the suspect through (an instance gone: yes, to drop it)."""
        if isinstance(suspect, ActivityWorkItem):
            return self._matches_filter(suspect.name, suspect.version, stream.activities)
        inst = self._live.in_memory(suspect)
        return inst is None or self._matches_filter(inst.name, inst.version, stream.orchestrations)

    def _offer_alone(self, stream: Stream) -> pb.WorkItem | None:
        """Under the lock: the first suspect the stream accepts, leased to it alone; None if none is left."""
        while not stream.closed:
            suspect = self._suspects.take(partial(self._accepts, stream))
            if suspect is None:
                return None
            item = self._suspect_item(suspect)
            if item is None or self._undeliverable(item):
                continue
            self._lease(item, stream)
            stream.alone = True
            self._dispatch_changed.notify_all()  # a stream emptying itself for it may go on
            return item
        return None

    def _suspect_item(self, suspect: Suspect) -> pb.WorkItem | None:
        """Under the lock: the work item for a suspect, dispatched as the SDK's loop does; None if nothing is owed."""
        if isinstance(suspect, ActivityWorkItem):
            if self._owing(suspect) is None:
                return None
            request = pb.ActivityRequest(name=suspect.name, taskId=suspect.task_id,
                                         orchestrationInstance=pb.OrchestrationInstance(instanceId=suspect.instance_id))
            if suspect.input is not None:
                request.input.value = suspect.input
            return pb.WorkItem(completionToken=str(suspect.completion_token), activityRequest=request)
        inst = self._live.in_memory(suspect)
        if inst is None or _is_terminal(inst.status) or not inst.pending_events:
            return None
        if suspect in self._orchestration_in_flight:  # not a suspect's state; let the SDK's loop take it later
            self._enqueue_orchestration(suspect)
            return None
        inst.dispatched_events = list(inst.pending_events)
        inst.pending_events.clear()
        if inst.history and not inst.dispatched_events[0].HasField("orchestratorStarted"):
            inst.dispatched_events.insert(0, helpers.new_orchestrator_started_event(datetime.now(UTC)))
        self._orchestration_in_flight.add(suspect)
        return pb.WorkItem(completionToken=str(inst.completion_token), orchestratorRequest=pb.OrchestratorRequest(
            instanceId=suspect, pastEvents=list(inst.history), newEvents=list(inst.dispatched_events)))

    def _undeliverable(self, item: pb.WorkItem) -> bool:
        """Under the lock: an orchestration work item no worker could receive ends its instance instead.

        Sent anyway, it would end the worker's stream (RESOURCE_EXHAUSTED on the worker's side), come back to the
        queue and end the next stream too, while every other orchestration waited for the worker to reconnect.
        """
        if not item.HasField("orchestratorRequest"):
            return False
        size = item.ByteSize()
        inst = self._instances.get(item.orchestratorRequest.instanceId)
        if size <= self._max_work_item_bytes or inst is None:
            return False
        self._end(inst, limits.WORK_ITEM_TOO_LARGE, limits.work_item_message(size, self._max_work_item_bytes))
        return True

    def _lease(self, item: pb.WorkItem, stream: Stream) -> None:
        """Record who holds the work item and add what the SDK backend leaves out (under the lock)."""
        if item.HasField("orchestratorRequest"):
            iid = item.orchestratorRequest.instanceId
            self._orch_leases[iid] = (stream, item.completionToken)
            trace = self._orch_trace.get(iid)
            if trace is not None:
                item.orchestratorRequest.orchestrationTraceContext.CopyFrom(trace)
        elif item.HasField("activityRequest"):
            req = item.activityRequest
            iid = req.orchestrationInstance.instanceId
            inst = self._instances.get(iid)
            scheduled = hist.find_scheduled(inst.history, req.taskId) if inst is not None else None
            version = None
            if scheduled is not None:
                task = scheduled.taskScheduled
                if task.HasField("parentTraceContext"):
                    req.parentTraceContext.CopyFrom(task.parentTraceContext)
                if task.HasField("version"):
                    req.version.CopyFrom(task.version)
                    version = task.version.value
                for key, value in task.tags.items():
                    req.tags[key] = value
            work = ActivityWorkItem(
                instance_id=iid, name=req.name, task_id=req.taskId,
                input=req.input.value if req.HasField("input") else None,
                completion_token=int(item.completionToken), version=version,
            )
            token = f"a{next(self._activity_tokens)}"  # one token per activity lease
            item.completionToken = token
            self._activity_leases[token] = _ActivityLease(stream, work)
        if stream.closed:
            self._release(stream)

    def _release(self, stream: Stream) -> None:
        """The stream ended: offer again, alone, whatever it took and did not answer. Only what it held by itself
        counts as unanswered: a stream that ends holding several items does not say which one ended it."""
        with self._lock:
            stream.closed = True
            self._open_streams.discard(stream)
            lost: list[OrchestrationInstance | ActivityWorkItem] = []
            for iid, (holder, token) in list(self._orch_leases.items()):
                if holder is stream:
                    del self._orch_leases[iid]
                    if self._holds(iid, token):
                        lost.append(self._instances[iid])
            for token, lease in list(self._activity_leases.items()):
                if lease.stream is stream:
                    del self._activity_leases[token]
                    if self._owing(lease.item) is not None:
                        lost.append(lease.item)
            counted = len(lost) == 1
            for work in lost:
                if isinstance(work, ActivityWorkItem):
                    if self._requeue_activity(work, counted=counted, alone=True):
                        log.info("re-dispatching activity %s#%d of %s alone: its worker's stream ended%s", work.name,
                                 work.task_id, work.instance_id, "" if counted else " (holding others too)")
                else:
                    self._redeliver(work, counted)
            self._dispatch_changed.notify_all()

    def _redeliver(self, inst: OrchestrationInstance, counted: bool) -> None:
        """Under the lock: the orchestration's work item was lost with its stream; offer it again alone (or, counted
        as unanswered once too often, end the instance)."""
        iid = inst.instance_id
        count = self._unanswered_again(iid) if counted else 0
        if count >= limits.MAX_UNANSWERED_DELIVERIES:
            self._never_answered(inst, count)
            return
        inst.pending_events = [*inst.dispatched_events, *inst.pending_events]
        inst.dispatched_events.clear()
        self._orchestration_in_flight.discard(iid)
        inst.completion_token = self._new_token()  # the lost worker's late answer is now stale
        self._suspect(iid)
        self._enqueue_orchestration(iid)  # marked for the next flush; kept out of the queue as a suspect
        log.info("re-dispatching orchestration %s alone: its worker's stream ended%s", iid,
                 "" if counted else " (holding others too)")

    def _suspect(self, suspect: Suspect) -> None:
        """Under the lock: offer this one alone next time (and not the ordinary way)."""
        if isinstance(suspect, str) and suspect in self._orchestration_queue_set:
            self._orchestration_queue_set.discard(suspect)
            self._orchestration_queue.remove(suspect)
        self._suspects.add(suspect)
        self._work_available.set()  # streams waiting in the SDK's loop look at their turn again
        self._dispatch_changed.notify_all()

    def _owing(self, work: ActivityWorkItem) -> OrchestrationInstance | None:
        """Under the lock: the running instance still waiting for this activity's answer, if any."""
        inst = self._live.in_memory(work.instance_id)
        if inst is None or _is_terminal(inst.status) or self._answered(inst, work.task_id):
            return None
        return inst

    def _requeue_activity(self, work: ActivityWorkItem, *, counted: bool, alone: bool) -> bool:
        """Under the lock: a delivery of the activity got no answer; offer it again (``alone``: as a suspect),
        or fail it once too many deliveries in a row were ``counted`` as unanswered."""
        inst = self._owing(work)
        if inst is None:
            return False
        key = (work.instance_id, work.task_id)
        count = 0
        if counted:
            count = self._unanswered_activities[key] = self._unanswered_activities.get(key, 0) + 1
        if count >= limits.MAX_UNANSWERED_DELIVERIES:
            del self._unanswered_activities[key]
            message = (f"activity {work.name!r} was offered {count} times in a row and never answered (the "
                       "worker's stream ended or it abandoned the item each time)")
            log.warning("localdts: failing activity #%d of %s: %s", work.task_id, work.instance_id, message)
            failed = pb.TaskFailedEvent(taskScheduledId=work.task_id,
                                        failureDetails=limits.failure(limits.NEVER_ANSWERED, message))
            inst.pending_events.append(pb.HistoryEvent(eventId=-1, taskFailed=failed))
            inst.last_updated_at = datetime.now(UTC)
            self._enqueue_orchestration(work.instance_id)
            return False
        if alone:
            self._suspect(work)
        else:
            self._activity_queue.append(work)
            self._work_available.set()
        return True

    @staticmethod
    def _answered(inst: OrchestrationInstance, task_id: int) -> bool:
        return hist.is_task_answered(inst.history, [*inst.dispatched_events, *inst.pending_events], task_id)

    def CompleteOrchestratorTask(self, request: pb.OrchestratorResponse,
                                 context: grpc.ServicerContext) -> pb.CompleteTaskResponse:
        iid = request.instanceId
        with self._lock:
            inst = self._live.in_memory(iid)
            if (inst is None or str(inst.completion_token) != request.completionToken
                    or iid not in self._orchestration_in_flight):
                # A lost worker's late answer: the work item was offered again (or the backend restarted).
                # The SDK backend would also clear the in-flight mark of the current holder; we must not.
                log.info("ignoring a stale orchestrator completion for %s", iid)
                return pb.CompleteTaskResponse()
            self._orch_leases.pop(iid, None)
            self._dispatch_changed.notify_all()
            self._unanswered.pop(iid, None)
            if request.HasField("orchestrationTraceContext"):
                trace = pb.OrchestrationTraceContext()
                trace.CopyFrom(request.orchestrationTraceContext)
                self._orch_trace[iid] = trace
            problem = limits.response_problem(request)
            if problem is not None:  # as the .NET worker does itself: the orchestration fails, naming the payload
                log.warning("localdts: orchestration %s FAILED: %s", iid, problem)
                request = limits.failed_response(request, problem)
            response = super().CompleteOrchestratorTask(request, context)
            self._touch([iid])
            if not _is_terminal(inst.status):
                self._end_if_over_the_limit(inst)
            ticket = self._ticket()
        self._settle(ticket, context)
        return response

    def CompleteActivityTask(self, request: pb.ActivityResponse,
                             context: grpc.ServicerContext) -> pb.CompleteTaskResponse:
        iid = request.instanceId
        with self._lock:
            self._activity_leases.pop(request.completionToken, None)
            self._dispatch_changed.notify_all()
            inst = self._live.in_memory(iid)
            if inst is None or _is_terminal(inst.status) or self._answered(inst, request.taskId):
                log.info("ignoring a repeated or late answer of activity #%d of %s", request.taskId, iid)
                return pb.CompleteTaskResponse()
            for token, lease in list(self._activity_leases.items()):
                if lease.item.instance_id == iid and lease.item.task_id == request.taskId:
                    del self._activity_leases[token]  # another worker still runs it; its answer will be dropped
            self._unanswered_activities.pop((iid, request.taskId), None)
            problem = limits.payload_problem("the activity's result",
                                             request.result.value if request.HasField("result") else None)
            if problem is not None:  # the activity fails instead (its orchestration can catch that)
                request = pb.ActivityResponse(instanceId=iid, taskId=request.taskId,
                                              completionToken=request.completionToken,
                                              failureDetails=limits.failure(limits.PAYLOAD_TOO_LARGE, problem))
            response = super().CompleteActivityTask(request, context)
            self._touch([iid])
            self._end_if_over_the_limit(inst)
            ticket = self._ticket()
        self._settle(ticket, context)
        return response

    def AbandonTaskActivityWorkItem(self, request: pb.AbandonActivityTaskRequest,
                                    context: grpc.ServicerContext) -> pb.AbandonActivityTaskResponse:
        """The SDK backend drops an abandoned activity; offer it again instead (a few times)."""
        with self._lock:
            lease = self._activity_leases.pop(request.completionToken, None)
            if lease is not None:  # it names its item: always counted
                self._requeue_activity(lease.item, counted=True, alone=False)
                self._dispatch_changed.notify_all()
        return pb.AbandonActivityTaskResponse()

    def AbandonTaskOrchestratorWorkItem(self, request: pb.AbandonOrchestrationTaskRequest,
                                        context: grpc.ServicerContext) -> pb.AbandonOrchestrationTaskResponse:
        with self._lock:
            for iid, (_, token) in list(self._orch_leases.items()):
                if token == request.completionToken:
                    del self._orch_leases[iid]
            self._dispatch_changed.notify_all()
            held = next((self._instances[i] for i in self._orchestration_in_flight if i in self._instances
                         and str(self._instances[i].completion_token) == request.completionToken), None)
            count = self._unanswered_again(held.instance_id) if held is not None else 0
            if held is not None and count >= limits.MAX_UNANSWERED_DELIVERIES:
                self._never_answered(held, count)
                ticket = self._ticket()
            else:
                response = super().AbandonTaskOrchestratorWorkItem(request, context)
                return response
        self._settle(ticket, context)
        return pb.AbandonOrchestrationTaskResponse()

    # --- gRPC: waits -----------------------------------------------------------------------------------------

    def WaitForInstanceStart(self, request: pb.GetInstanceRequest,
                             context: grpc.ServicerContext) -> pb.GetInstanceResponse:
        found = self._await_state(request.instanceId, lambda i: i.status != pb.ORCHESTRATION_STATUS_PENDING,
                                  context)
        return self._waited(request, context, found, "start")

    def WaitForInstanceCompletion(self, request: pb.GetInstanceRequest,
                                  context: grpc.ServicerContext) -> pb.GetInstanceResponse:
        found = self._await_state(request.instanceId, lambda i: _is_terminal(i.status), context)
        return self._waited(request, context, found, "complete")

    def _await_state(self, instance_id: str, predicate: Callable[[OrchestrationInstance], bool],
                     context: grpc.ServicerContext) -> OrchestrationInstance | None:
        """Wait until the instance matches, the call's deadline passes or the caller goes away.

        A call without a deadline waits for as long as it takes (the SDK backend raised "timestamp out of range
        for platform time_t" on it, and waited 30 s at most when given no timeout).
        """
        remaining = context.time_remaining()
        timeout = None if remaining is None or remaining > threading.TIMEOUT_MAX else remaining
        with self._lock:
            inst = self._live.in_memory(instance_id)
            if inst is not None and predicate(inst):
                return inst
            waiter = StateWaiter(predicate=predicate)
            self._state_waiters.setdefault(instance_id, []).append(waiter)
        if inst is None:  # ended (in the store), or not there yet: the waiter is in place before we look
            stored = self._peek(instance_id)
            if stored is not None and predicate(stored):
                waiter.result = stored
                waiter.event.set()
        if not context.add_callback(waiter.event.set):  # the call ended (cancelled, deadline): stop waiting
            waiter.event.set()
        waiter.event.wait(timeout)
        with self._lock:
            waiters = self._state_waiters.get(instance_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._state_waiters[instance_id]
            return waiter.result

    def _waited(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext,
                found: OrchestrationInstance | None, what: str) -> pb.GetInstanceResponse:
        if found is not None:
            with self._lock:
                return self._build_instance_response(found, request.getInputsAndOutputs)
        exists = self._peek(request.instanceId) is not None
        if exists and context.is_active():
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"Timed out waiting for instance '{request.instanceId}' to {what}")
        return pb.GetInstanceResponse(exists=False)

    def StreamInstanceHistory(self, request: pb.StreamInstanceHistoryRequest,
                              context: grpc.ServicerContext) -> Iterator[pb.HistoryChunk]:
        """Chunks of at most HISTORY_CHUNK_BYTES (the SDK backend sends 100 events a chunk, which a client with
        gRPC's 4 MiB receive limit cannot read once events carry large payloads)."""
        with self._lock:
            inst = self._live.in_memory(request.instanceId)
            # Appended to, never changed in place once stamped: the events themselves can be shared.
            events = list(inst.history) if inst is not None else None
            ticket = self._unwritten(request.instanceId)  # only what is on disk, as GetInstance
        self._settle(ticket, context)
        if events is None:  # ended: read from the store, without keeping it
            stored = self._store.row(request.instanceId) if self._store is not None else None
            if stored is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Orchestration instance '{request.instanceId}' not found")
            assert self._store is not None
            events = [pb.HistoryEvent.FromString(b) for b in self._store.history(request.instanceId)]
        chunk: list[pb.HistoryEvent] = []
        size = 0
        for event in events:
            cost = event.ByteSize() + limits.EVENT_FRAMING_BYTES
            if chunk and size + cost > limits.HISTORY_CHUNK_BYTES:
                yield pb.HistoryChunk(events=chunk)
                chunk, size = [], 0
            chunk.append(event)
            size += cost
        if chunk:
            yield pb.HistoryChunk(events=chunk)

    # --- gRPC: reads that never load every instance ----------------------------------------------------------

    def GetInstance(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> pb.GetInstanceResponse:
        """Only what is on disk, as a DTS reader sees only what its store committed: a client once saw a custom
        status that localdts, killed before writing it, no longer had after the restart. The answer is built
        first and sent once everything it shows is written."""
        inst = self._peek(request.instanceId)
        with self._lock:
            response = (pb.GetInstanceResponse(exists=False) if inst is None
                        else self._build_instance_response(inst, request.getInputsAndOutputs))
            ticket = self._unwritten(request.instanceId)
        self._settle(ticket, context)
        return response

    def _unwritten(self, instance_id: str) -> Ticket | None:
        """Under the lock: what to wait for before showing the instance (its start, a change, its purge) to a
        reader, if its latest change is not on disk yet; None in memory mode."""
        if self._commits is None:
            return None
        if not any(instance_id in changes.dirty or instance_id in changes.deleted
                   for changes in (self._pending, self._writing) if changes is not None):
            return None
        return self._commits.settled()

    def QueryInstances(self, request: pb.QueryInstancesRequest,
                       context: grpc.ServicerContext) -> pb.QueryInstancesResponse:
        """Newest first, one page in SQL (see :mod:`localdts.queries`); in memory mode, the same over memory."""
        try:
            q = InstanceQuery.from_request(request.query)
        except BadToken as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self._store is not None:
            found = [self._instance_from(row, whole=False) for row in self._store.query(q)]
        else:
            with self._lock:
                found = sorted((i for i in self._instances.values()
                                if q.matches(i.status, _us(i.created_at) or 0, i.instance_id)),
                               key=lambda i: (_us(i.created_at) or 0, i.instance_id), reverse=True)[:q.page_size + 1]
        page = found[:q.page_size]
        with self._lock:
            states = [self._build_instance_response(i, q.with_payloads).orchestrationState for i in page]
        response = pb.QueryInstancesResponse(orchestrationState=states)
        if len(found) > q.page_size:
            last = page[-1]
            response.continuationToken.value = encode_token(_us(last.created_at) or 0, last.instance_id)
        return response

    def ListInstanceIds(self, request: pb.ListInstanceIdsRequest,
                        context: grpc.ServicerContext) -> pb.ListInstanceIdsResponse:
        """Ended instances, oldest completion first, one page in SQL."""
        try:
            q = CompletedQuery.from_request(request)
        except BadToken as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self._store is not None:
            found = self._store.completed(q)
        else:
            with self._lock:
                found = sorted((_us(i.completed_at) or 0, i.instance_id) for i in self._instances.values()
                               if q.matches(i.status, _us(i.completed_at), i.instance_id))[:q.page_size + 1]
        page = found[:q.page_size]
        response = pb.ListInstanceIdsResponse(instanceIds=[iid for _, iid in page])
        if len(found) > q.page_size:
            response.lastInstanceKey.value = encode_token(*page[-1])
        return response

    # --- gRPC: entities --------------------------------------------------------------------------------------

    def CompleteEntityTask(self, request: pb.EntityBatchResult,
                           context: grpc.ServicerContext) -> pb.CompleteTaskResponse:
        """As DTS, an entity left with no state, no lock and nothing queued is removed (its own purge)."""
        with self._lock:
            entity_id = next((e.instance_id for e in self._entities.values()
                              if str(e.completion_token) == request.completionToken), None)
            response = super().CompleteEntityTask(request, context)
            entity = self._entities.get(entity_id) if entity_id is not None else None
            if (entity is not None and entity.serialized_state is None and entity.locked_by is None
                    and not entity.pending_operations and entity_id not in self._entity_in_flight):
                del self._entities[entity.instance_id]
                self._entity_queue_set.discard(entity.instance_id)
        return response

    def CleanEntityStorage(self, request: pb.CleanEntityStorageRequest,
                           context: grpc.ServicerContext) -> pb.CleanEntityStorageResponse:
        """DTS answers 0 and 0: it removes empty entities by itself (see durabletask-python's DTS tests)."""
        return pb.CleanEntityStorageResponse(emptyEntitiesRemoved=0, orphanedLocksReleased=0)

    # --- gRPC: client calls that change state ----------------------------------------------------------------

    def StartInstance(self, request: pb.CreateInstanceRequest,
                      context: grpc.ServicerContext) -> pb.CreateInstanceResponse:
        if not request.instanceId:
            request.instanceId = uuid.uuid4().hex
        iid = request.instanceId
        problem = instance_id_problem(iid) or limits.payload_problem(
            "the orchestration's input", request.input.value if request.HasField("input") else None)
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        start_at = (request.scheduledStartTimestamp.ToDatetime(tzinfo=UTC)
                    if request.HasField("scheduledStartTimestamp") else None)
        later = start_at is not None and start_at > datetime.now(UTC)
        base = super().StartInstance
        with self._lock:
            previous = self._start_at.get(iid)
            if later:
                assert start_at is not None
                self._start_at[iid] = start_at  # before the SDK enqueues it, so that it does not
            try:
                response = base(request, context)
            except BaseException:
                if previous is None:
                    self._start_at.pop(iid, None)
                else:
                    self._start_at[iid] = previous
                raise
            inst = self._instances[iid]
            if not later:
                self._start_at.pop(iid, None)
            else:
                assert start_at is not None
                self._timers.add(start_at.timestamp(), partial(self._begin, inst))
            self._orch_trace.pop(iid, None)
            if request.HasField("parentTraceContext"):
                started = hist.execution_started(inst.pending_events)
                if started is not None:
                    started.executionStarted.parentTraceContext.CopyFrom(request.parentTraceContext)
            self._touch([iid])
            ticket = self._ticket()
        self._settle(ticket, context)
        return response

    def RaiseEvent(self, request: pb.RaiseEventRequest,
                   context: grpc.ServicerContext) -> pb.RaiseEventResponse:
        """Bounded per instance: nothing from outside can grow a history past what a worker can receive."""
        data = request.input.value if request.HasField("input") else None
        problem = limits.payload_problem(f"the data of event {request.name!r}", data)
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        base = super().RaiseEvent

        def call() -> pb.RaiseEventResponse:
            inst = self._peek(request.instanceId)
            if inst is not None and _is_terminal(inst.status):
                return pb.RaiseEventResponse()  # accepted and dropped: it can never be processed
            if inst is not None:
                self._check_room_for_event(inst, request, context)
            return base(request, context)
        return self._changing(context, call, lambda _: [request.instanceId])

    def _check_room_for_event(self, inst: OrchestrationInstance, request: pb.RaiseEventRequest,
                              context: grpc.ServicerContext) -> None:
        """Under the lock: refuse an event the instance has no room for (the caller gets the reason)."""
        waiting = sum(1 for e in inst.pending_events if e.HasField("eventRaised"))
        if waiting >= limits.MAX_PENDING_RAISED_EVENTS:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"instance {inst.instance_id} already has {waiting} raised events waiting to be "
                          f"processed (localdts's bound is {limits.MAX_PENDING_RAISED_EVENTS}); try again later")
        size = self._work_item_bytes(inst, extra=request.ByteSize() + limits.EVENT_FRAMING_BYTES)
        if size > self._max_work_item_bytes:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"instance {inst.instance_id} has no room for event {request.name!r}: with it, "
                          f"{limits.work_item_message(size, self._max_work_item_bytes)}")

    def TerminateInstance(self, request: pb.TerminateRequest,
                          context: grpc.ServicerContext) -> pb.TerminateResponse:
        base = super().TerminateInstance

        problem = limits.payload_problem("the termination's output",
                                         request.output.value if request.HasField("output") else None)
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

        def call() -> pb.TerminateResponse:
            self._start_at.pop(request.instanceId, None)  # terminating a scheduled instance does not wait
            return base(request, context)
        return self._changing(context, call, lambda _: [request.instanceId])

    def SuspendInstance(self, request: pb.SuspendRequest,
                        context: grpc.ServicerContext) -> pb.SuspendResponse:
        base = super().SuspendInstance
        return self._changing(context, lambda: base(request, context), lambda _: [request.instanceId])

    def ResumeInstance(self, request: pb.ResumeRequest,
                       context: grpc.ServicerContext) -> pb.ResumeResponse:
        base = super().ResumeInstance
        return self._changing(context, lambda: base(request, context), lambda _: [request.instanceId])

    def RewindInstance(self, request: pb.RewindInstanceRequest,
                       context: grpc.ServicerContext) -> pb.RewindInstanceResponse:
        base = super().RewindInstance
        return self._changing(context, lambda: base(request, context), lambda _: [request.instanceId])

    def RestartInstance(self, request: pb.RestartInstanceRequest,
                        context: grpc.ServicerContext) -> pb.RestartInstanceResponse:
        base = super().RestartInstance
        return self._changing(context, lambda: base(request, context), lambda r: [request.instanceId, r.instanceId])

    def PurgeInstances(self, request: pb.PurgeInstancesRequest,
                       context: grpc.ServicerContext) -> pb.PurgeInstancesResponse:
        """Ended instances only, as DTS. By filter, at most PURGE_BATCH a call (``isComplete`` false when more
        remain), chosen in the store without reading every instance."""
        gone: list[str] = []
        complete = True

        def call() -> None:
            nonlocal complete
            if request.instanceId:
                inst = self._peek(request.instanceId)
                found = [request.instanceId] if inst is not None and _is_terminal(inst.status) else []
            else:
                f = PurgeFilter.from_request(request.purgeInstanceFilter)
                found = [i.instance_id for i in self._instances.values()
                         if _is_terminal(i.status) and f.matches(i.status, _us(i.created_at) or 0)]
                if self._store is not None:
                    stored = self._store.purgeable(f, PURGE_BATCH)
                    complete = len(stored) < PURGE_BATCH
                    found = list(dict.fromkeys([*found, *(i for i in stored if not self._purged(i))]))
            for iid in found:
                if self._live.in_memory(iid) is not None:
                    del self._instances[iid]
                self._forget(iid)
                self._state_waiters.pop(iid, None)
                if self._store is not None:
                    self._pending.deleted.add(iid)
            gone.extend(found)

        self._changing(context, call, lambda _: gone)
        log.info("purged %d instance(s)", len(gone))
        response = pb.PurgeInstancesResponse(deletedInstanceCount=len(gone))
        response.isComplete.value = complete
        return response
