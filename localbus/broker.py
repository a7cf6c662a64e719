"""Queue semantics, independent of AMQP: enqueue, lock, settle, schedule, expire, dead-letter.

Everything here runs on the server's single I/O thread, so no locking is needed and two receivers can never
hold the same message. Time is wall-clock milliseconds (Service Bus reports lock expiry and enqueue time as
timestamps); deadlines are kept in one heap with lazy invalidation. With a store, a long queue's tail stays on
disk (see HOT_MESSAGES), so memory does not grow with the number of queued messages.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import codec
from .config import QueueSettings
from .properties import check_application_properties, check_value
from .routing import INLINE_BUDGET, RoutingWorker, matching, message_cost, rules_cost
from .sessions import (
    NO_SESSION_DESCRIPTION,
    NO_SESSION_REASON,
    Holder,
    Session,
    SessionCannotBeLocked,
    SessionLockLost,
    check_session_ids,
)
from .sqlfilter import MessageView
from .store import ACTIVE, DEFERRED, SCHEDULED, Persistence, StorageError, StoredRow
from .topics import Rule, TopicSpec, message_view, subscription_path

log = logging.getLogger("localbus.broker")

DLQ_SUFFIX = "/$deadletterqueue"
_NEVER_MS = 2**62
_SEQ = codec.enc_symbol(b"x-opt-sequence-number")
_ENQ = codec.enc_symbol(b"x-opt-enqueued-time")
_LOCKED = codec.enc_symbol(b"x-opt-locked-until")
_STATE = codec.enc_symbol(b"x-opt-message-state")  # 0 active, 1 deferred, 2 scheduled: our store's numbering

# A long queue stays on disk: with a store, an entity without sessions keeps at most HOT_MESSAGES available
# messages in memory (locked, deferred and scheduled ones always are); the rest are read back half as many at a
# time, in sequence order, once fewer than a fifth are left. So memory does not grow with the queue's length.
HOT_MESSAGES = 10_000  # PAGE is half of it, REFILL_BELOW a fifth

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"


class LockLost(Exception):
    """The lock token is unknown or its lock has expired (Service Bus: ``message-lock-lost``)."""


class MessageNotFound(Exception):
    """A sequence number does not name a message in the expected state (``message-not-found``)."""


class MoveFailed(Exception):
    """A message could not be re-encoded for its next state; it was left where it was."""


def parse_incoming(raw: bytes) -> codec.StoredMessage:
    """Parse a message a client sends and refuse what Service Bus would refuse (see :mod:`.properties`)."""
    msg = codec.parse_message(raw)
    check_application_properties(msg.application_properties)
    if msg.message_id is None:  # Service Bus gives every message an id; some clients (JavaScript) rely on it
        msg = msg.with_message_id(uuid.uuid4().hex)
    return msg


def parse_transfer(raw: bytes) -> list[codec.StoredMessage]:
    """The messages of one transfer (a message or a batch), all checked before any is enqueued."""
    return [parse_incoming(part) for part in codec.split_batch(raw) or [raw]]


@dataclass(eq=False, slots=True)
class Record:
    """One message in one entity."""

    entity: Entity
    seq: int
    msg: codec.StoredMessage
    enqueued_ms: int
    delivery_count: int
    state: int
    expires_ms: int | None
    lock_token: uuid.UUID | None = None
    locked_until_ms: int = 0
    gone: bool = False
    stuck: bool = False  # a move failed and was logged: it stays here, and is not retried by timers
    session: Session | None = None  # on an entity that requires sessions: the session it belongs to


class Consumer(Protocol):
    """A receiving link, as the broker sees it."""

    peek_lock: bool

    def credit(self) -> int: ...

    def push(self, record: Record, token: uuid.UUID | None, wire: bytes) -> None: ...

    def idle(self) -> None: ...


@dataclass(eq=False)
class Waiter:
    """A receiver asking for the next available session while none is: ``accepted`` is called once one is."""

    holder: Holder
    accepted: Callable[[Session], None]


QUEUE, DEAD_LETTER_QUEUE, TOPIC, SUBSCRIPTION = "queue", "dead-letter queue", "topic", "subscription"


@dataclass(eq=False)
class Entity:
    """A queue, a subscription (a queue fed by its topic), a dead-letter sub-queue of either, or a topic."""

    name: str
    settings: QueueSettings
    is_dlq: bool = False
    dlq: Entity | None = None
    kind: str = QUEUE
    routes: list[tuple[Entity, tuple[Rule, ...]]] = field(default_factory=list)  # a topic's subscriptions
    records: dict[int, Record] = field(default_factory=dict)
    ready: list[int] = field(default_factory=list)  # heap of sequence numbers of unlocked ACTIVE records
    last_seq: int = 0
    dedup: dict[str, int] = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)
    rr: int = 0
    route_cost: tuple[int, int] = (0, 0)  # a topic's (filter steps, LIKE pattern length): see .routing
    routing: collections.deque[Routing] = field(default_factory=collections.deque)  # a topic's sends, in order
    sessions: dict[str, Session] = field(default_factory=dict)  # with RequiresSession: its sessions by id
    horizon: int | None = None  # available messages from this sequence number on may be on disk only...
    cold: int = 0  # ...and this many of them are
    waiting: list[Waiter] = field(default_factory=list)  # receivers waiting for the next available session

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def sessionful(self) -> bool:
        """Whether messages here belong to sessions (a queue or subscription with RequiresSession)."""
        return self.settings.requires_session and self.kind in (QUEUE, SUBSCRIPTION)


Outcome = Callable[[list[int] | Exception], None]


@dataclass(eq=False)
class Routing:
    """Messages sent together to a topic, waiting for their subscriptions to be known (then stored in order)."""

    messages: list[tuple[codec.StoredMessage, int | None]]  # (message, scheduled enqueue time)
    views: list[MessageView]
    done: Outcome
    matches: list[list[int]] | Exception | None = None


def now_ms() -> int:
    return int(time.time() * 1000)


class Broker:
    """All entities, locks and timers of one localbus instance."""

    def __init__(self, queues: dict[str, QueueSettings], persistence: Persistence | None = None,
                 clock: Callable[[], int] = now_ms, topics: Mapping[str, TopicSpec] | None = None,
                 hot_messages: int = HOT_MESSAGES) -> None:
        self.persistence = persistence or Persistence()
        self.hot_messages = max(hot_messages, 10)
        self.page = self.hot_messages // 2
        self.clock = clock
        self.entities: dict[str, Entity] = {}
        self.locks: dict[uuid.UUID, Record] = {}
        self._timers: list[tuple[int, int, int, Record, uuid.UUID | None]] = []
        self._session_timers: list[tuple[int, int, Session, int]] = []  # (when, tie, session, generation)
        self._tie = itertools.count()
        self.dirty: set[Entity] = set()
        self.dirty_sessions: set[Session] = set()  # held sessions that may have something to hand out
        self.worker: RoutingWorker | None = None  # set by the server: expensive routing leaves the loop
        for name, settings in queues.items():
            self._add_queue(name, settings, QUEUE)
        for topic_name, spec in (topics or {}).items():
            topic = Entity(topic_name, spec.settings, kind=TOPIC)
            self.entities[topic.key] = topic
            for sub_name, sub in spec.subscriptions.items():
                queue = self._add_queue(subscription_path(topic_name, sub_name), sub.settings, SUBSCRIPTION)
                topic.routes.append((queue, sub.rules))
            topic.route_cost = rules_cost([rules for _, rules in topic.routes])
        self._load()

    def _add_queue(self, name: str, settings: QueueSettings, kind: str) -> Entity:
        queue = Entity(name, settings, kind=kind)
        dlq_settings = QueueSettings(lock_duration=settings.lock_duration, max_delivery_count=2**31 - 1)
        queue.dlq = Entity(name + "/$DeadLetterQueue", dlq_settings, is_dlq=True, kind=DEAD_LETTER_QUEUE)
        self.entities[queue.key] = queue
        self.entities[queue.dlq.key] = queue.dlq
        return queue

    # --- lookup and start-up -------------------------------------------------------------------------------

    def entity(self, path: str) -> Entity | None:
        """Find an entity by path (``queue`` or ``queue/$DeadLetterQueue``), case-insensitively."""
        return self.entities.get(path.strip("/").lower())

    def _load(self) -> None:
        p = self.persistence
        for key, seq in p.last_sequences().items():
            if key in self.entities:
                self.entities[key].last_seq = max(self.entities[key].last_seq, seq)
        now = self.clock()
        restored = 0
        for key in p.entities():
            entity = self.entities.get(key)
            if entity is None:
                log.warning("data file has messages for unknown entity %r: kept on disk, not served", key)
                continue
            for row in p.rows(key, active=False):  # scheduled and deferred: all of them
                self._restore(entity, row)
                restored += 1
            if not self._pages(entity):
                for row in p.rows(key, active=True):
                    self._restore(entity, row)
                    restored += 1
                continue
            entity.horizon = 0
            restored += self._page_in(entity, self.hot_messages)
            entity.cold = p.count_active(key, entity.horizon) if entity.horizon is not None else 0
            restored += entity.cold
        for key, message_id, expires_ms in p.dedup_entries():
            if key in self.entities and expires_ms > now:
                self.entities[key].dedup[message_id] = expires_ms
        for key, session_id, state in p.session_states():
            if key in self.entities and self.entities[key].sessionful:
                self._session(self.entities[key], session_id).state = state
        if restored:
            log.info("restored %d messages from %s", restored, getattr(p, "path", "storage"))

    def _restore(self, entity: Entity, row: StoredRow) -> Record:
        """A stored message back in memory, with its place (ready, or its timer)."""
        rec = Record(entity, row.seq, codec.parse_message(row.blob), row.enqueued_ms, row.delivery_count, row.state,
                     row.expires_ms)
        entity.records[row.seq] = rec
        entity.last_seq = max(entity.last_seq, row.seq)
        self._join_session(rec)
        if row.state == SCHEDULED:
            self._timer(row.enqueued_ms, 0, rec)
        elif row.state == ACTIVE:
            self._make_ready(rec)
        if rec.expires_ms is not None and row.state != SCHEDULED:
            self._timer(rec.expires_ms, 2, rec)
        return rec

    # --- a long queue stays on disk -------------------------------------------------------------------------

    def _pages(self, entity: Entity) -> bool:
        """Whether this entity may keep available messages on disk only (a store; no sessions)."""
        return self.persistence.durable and not entity.sessionful and entity.kind != TOPIC

    def _spill(self, entity: Entity, seq: int) -> bool:
        """Whether a message that became available should stay on disk only (it is already written there)."""
        if not self._pages(entity) or (entity.horizon is None and len(entity.ready) < self.hot_messages):
            return False
        entity.horizon = seq if entity.horizon is None else min(entity.horizon, seq)
        entity.cold += 1
        return True

    def _page_in(self, entity: Entity, limit: int | None = None) -> int:
        """Read the next available messages from disk, in sequence order; returns how many came back."""
        if entity.horizon is None:
            return 0
        limit = limit or self.page
        rows = list(self.persistence.rows(entity.key, active=True, from_seq=entity.horizon, limit=limit))
        loaded = 0
        for row in rows:
            if row.seq not in entity.records:  # not one that came back to memory some other way
                self._restore(entity, row)
                loaded += 1
        entity.cold = max(0, entity.cold - loaded)
        if len(rows) < limit:
            entity.horizon, entity.cold = None, 0
        else:
            entity.horizon = rows[-1].seq + 1
        return loaded

    def reset(self) -> None:
        """Forget every message, lock, timer and consumer held in memory; the store keeps what was committed."""
        self.locks.clear()
        self._timers.clear()
        self._session_timers.clear()
        self.dirty.clear()
        self.dirty_sessions.clear()
        for entity in self.entities.values():
            entity.records.clear()
            entity.ready.clear()
            entity.dedup.clear()
            entity.consumers.clear()
            entity.routing.clear()
            entity.sessions.clear()
            entity.waiting.clear()
            entity.last_seq = 0
            entity.horizon, entity.cold = None, 0

    def reload(self) -> None:
        """Make memory what the store holds, as a restart would (after a failed write: see server.py)."""
        self.reset()
        self._load()

    def refusal(self) -> StorageError | None:
        """Why a new message cannot be taken now (the store failed, or the disk is nearly full), or None."""
        return self.persistence.failure or self.persistence.space_problem()

    def restart(self) -> None:
        """Forget locks, consumers and unacknowledged sends, as a broker restart does (messages are kept)."""
        for entity in self.entities.values():
            entity.routing.clear()
        for entity in self.entities.values():
            entity.waiting.clear()
            for session in entity.sessions.values():
                session.holder = None
                session.generation += 1
        for rec in list(self.locks.values()):
            self._unlock(rec)
            if rec.state == ACTIVE:
                self._make_ready(rec)
        self.locks.clear()
        for entity in self.entities.values():
            entity.consumers.clear()

    # --- timers ---------------------------------------------------------------------------------------------
    # kinds: 0 = scheduled enqueue, 1 = lock expiry, 2 = TTL expiry

    def _timer(self, when_ms: int, kind: int, record: Record, token: uuid.UUID | None = None) -> None:
        heapq.heappush(self._timers, (when_ms, next(self._tie), kind, record, token))

    def next_deadline_ms(self) -> int | None:
        due = [heap[0][0] for heap in (self._timers, self._session_timers) if heap]
        return min(due) if due else None

    def run_timers(self) -> None:
        """Fire every due deadline (scheduled messages, lock expiry, TTL expiry, session lock expiry)."""
        now = self.clock()
        while self._session_timers and self._session_timers[0][0] <= now and self.persistence.failure is None:
            _, _, session, generation = heapq.heappop(self._session_timers)
            if session.generation == generation and session.holder is not None and session.locked_until_ms <= now:
                try:
                    self.release_session(session, expired=True)
                except StorageError:
                    return
        while self._timers and self._timers[0][0] <= now and self.persistence.failure is None:
            _, _, kind, rec, token = heapq.heappop(self._timers)
            if rec.gone:
                continue
            try:
                self._fire(kind, rec, token, now)
            except StorageError:
                return  # the server reloads from the store; this timer comes back with it
            except Exception:  # one bad message must never stop the loop that serves every other one
                self._log_stuck(rec, "timer")

    def _fire(self, kind: int, rec: Record, token: uuid.UUID | None, now: int) -> None:
        if kind == 0 and rec.state == SCHEDULED:
                self._activate(rec, now)
        elif kind == 1 and rec.lock_token == token and token is not None and rec.locked_until_ms <= now:
            log.debug("lock expired: %s seq %d", rec.entity.name, rec.seq)
            self._unlock(rec)
            self._failed_delivery(rec)
        elif kind == 2 and rec.state != SCHEDULED and rec.expires_ms is not None and rec.expires_ms <= now:
            if rec.lock_token is not None:  # expiry waits for the lock to end, as in Service Bus
                self._timer(max(self._lock_end(rec), now) + 1, 2, rec)
            else:
                self._expire(rec)

    @staticmethod
    def _log_stuck(rec: Record, what: str) -> None:
        """Log a failed move once per message (a stuck message may be retried by clients many times)."""
        if not rec.stuck:
            rec.stuck = True
            log.exception("%s of message %d on %s failed; the message stays where it is",
                          what, rec.seq, rec.entity.name)

    # --- sending --------------------------------------------------------------------------------------------

    def send(self, entity: Entity, raw: bytes) -> list[int]:
        """Accept one transfer (a message or a batch); returns the sequence numbers (duplicates omitted)."""
        return [seq for seq in (self.enqueue(entity, msg) for msg in parse_transfer(raw)) if seq is not None]

    def submit(self, entity: Entity, messages: list[tuple[codec.StoredMessage, int | None]], done: Outcome) -> None:
        """Enqueue (message, scheduled time) pairs and call ``done`` with their sequence numbers (0 for a
        duplicate) or the exception that stopped them: at once, or, on a topic whose rules are expensive for
        these messages, once the routing worker has evaluated them. A topic stores its messages in the order
        they were submitted. While :meth:`refusal` gives a reason, nothing is taken and ``done`` gets it."""
        refused: Exception | None = self.refusal()
        if refused is None:
            try:
                check_session_ids(entity.name, [msg for msg, _ in messages], required=entity.sessionful)
            except Exception as exc:
                refused = exc
        if refused is not None:
            done(refused)
            return
        if entity.kind != TOPIC:
            try:
                seqs = [self.enqueue(entity, msg, scheduled_ms) or 0 for msg, scheduled_ms in messages]
            except Exception as exc:
                done(exc)
                return
            done(seqs)
            return
        job = Routing(messages, [message_view(msg) for msg, _ in messages], done)
        entity.routing.append(job)
        rule_sets = [rules for _, rules in entity.routes]
        cost = sum(message_cost(view, *entity.route_cost) for view in job.views)
        if self.worker is None or cost <= INLINE_BUDGET:
            job.matches = [matching(rule_sets, view) for view in job.views]
            self._store_routed(entity)
            return
        log.debug("routing %d message(s) of %s on the worker (cost %d)", len(messages), entity.name, cost)

        def routed(result: Any) -> None:
            job.matches = result
            if job in entity.routing:  # not dropped by a restart meanwhile
                self._store_routed(entity)
        self.worker.run(lambda cancelled: [matching(rule_sets, view, cancelled) for view in job.views], routed)

    def routing_pending(self, topic: str) -> int:
        """Sends to a topic still waiting for their routing (for tests and diagnostics)."""
        entity = self.entity(topic)
        return len(entity.routing) if entity is not None else 0

    def _store_routed(self, topic: Entity) -> None:
        """Store every routed send at the head of the topic's queue, in order, and tell each sender."""
        while topic.routing and topic.routing[0].matches is not None:
            job = topic.routing.popleft()
            found = job.matches
            if isinstance(found, Exception):
                job.done(found)
                continue
            try:
                seqs = [self.enqueue(topic, msg, scheduled_ms, matches) or 0
                        for (msg, scheduled_ms), matches in zip(job.messages, found or [], strict=True)]
            except Exception as exc:
                job.done(exc)
                continue
            job.done(seqs)

    def enqueue(self, entity: Entity, msg: codec.StoredMessage, scheduled_ms: int | None = None,
                matches: list[int] | None = None) -> int | None:
        """Add a message; returns its sequence number, or None when dropped as a duplicate.

        On a topic the message is copied, under the topic's sequence number, into every subscription with a
        matching rule (none matching: it is dropped, as Service Bus drops it); ``matches`` are those
        subscriptions' indexes when already known."""
        now = self.clock()
        dedup = entity.settings.requires_duplicate_detection and not entity.is_dlq
        if dedup and msg.message_id is not None and self._is_duplicate(entity, msg.message_id, now):
            log.debug("duplicate message id %r dropped on %s", msg.message_id, entity.name)
            return None
        entity.last_seq += 1
        seq = entity.last_seq
        self.persistence.set_last_sequence(entity.key, seq)
        if entity.kind == TOPIC:
            if matches is None:
                matches = matching([rules for _, rules in entity.routes], message_view(msg))
            for index in matches:
                subscription, copy = entity.routes[index][0], self._topic_ttl(entity, msg)
                if subscription.sessionful and msg.session_id is None and subscription.dlq is not None:
                    self._store(subscription.dlq, copy.with_application_properties({
                        "DeadLetterReason": NO_SESSION_REASON, "DeadLetterErrorDescription": NO_SESSION_DESCRIPTION}),
                        seq, None, now)
                else:
                    self._store(subscription, copy, seq, scheduled_ms, now)
            return seq
        self._store(entity, msg, seq, scheduled_ms, now)
        return seq

    @staticmethod
    def _topic_ttl(topic: Entity, msg: codec.StoredMessage) -> codec.StoredMessage:
        """A topic's DefaultMessageTimeToLive caps the TTL of the copies it hands its subscriptions."""
        ttl = topic.settings.default_message_ttl * 1000
        if ttl >= 2**32 or (msg.ttl_ms is not None and msg.ttl_ms <= ttl):
            return msg
        return replace(msg, ttl_ms=int(ttl))

    def _store(self, entity: Entity, msg: codec.StoredMessage, seq: int, scheduled_ms: int | None, now: int) -> None:
        entity.last_seq = max(entity.last_seq, seq)
        when = scheduled_ms if scheduled_ms is not None else msg.scheduled_ms
        scheduled = when is not None and when > now
        enqueued = when if scheduled and when is not None else now
        rec = Record(entity, seq, msg, enqueued, 0, SCHEDULED if scheduled else ACTIVE, None)
        if not scheduled:
            rec.expires_ms = self._expiry(entity, msg, enqueued)
        self._persist_insert(rec)
        if not scheduled and self._spill(entity, seq):
            return
        entity.records[seq] = rec
        self._join_session(rec)
        if scheduled:
            self._timer(enqueued, 0, rec)
        else:
            self._make_ready(rec)
            if rec.expires_ms is not None:
                self._timer(rec.expires_ms, 2, rec)

    def _is_duplicate(self, entity: Entity, message_id: str, now: int) -> bool:
        if entity.dedup:
            stale = [k for k, exp in itertools.takewhile(lambda kv: kv[1] <= now, entity.dedup.items())]
            for k in stale:
                del entity.dedup[k]
            if stale:
                self.persistence.forget_ids(entity.key, now)
        if message_id in entity.dedup:
            return True
        expires = now + int(entity.settings.duplicate_detection_window * 1000)
        entity.dedup[message_id] = expires
        self.persistence.remember_id(entity.key, message_id, expires)
        return False

    @staticmethod
    def _expiry(entity: Entity, msg: codec.StoredMessage, enqueued: int) -> int | None:
        if entity.is_dlq:
            return None
        ttl = entity.settings.default_message_ttl * 1000
        if msg.ttl_ms is not None:
            ttl = min(ttl, msg.ttl_ms)
        return None if enqueued + ttl >= _NEVER_MS else int(enqueued + ttl)

    def _activate(self, rec: Record, now: int) -> None:
        rec.state = ACTIVE
        rec.expires_ms = self._expiry(rec.entity, rec.msg, rec.enqueued_ms)
        self._persist_update(rec)
        self._make_ready(rec)
        if rec.expires_ms is not None:
            self._timer(rec.expires_ms, 2, rec)

    def cancel_scheduled(self, entity: Entity, seqs: list[int]) -> None:
        """Remove scheduled messages; unknown or already-enqueued ones are ignored, as Service Bus does. On a
        topic, the copies in its subscriptions are removed."""
        targets = [sub for sub, _ in entity.routes] if entity.kind == TOPIC else [entity]
        for seq in seqs:
            for target in targets:
                rec = target.records.get(seq)
                if rec is not None and rec.state == SCHEDULED:
                    self._remove(rec)

    # --- receiving ------------------------------------------------------------------------------------------

    def _make_ready(self, rec: Record) -> None:
        session = rec.session
        if session is None:
            heapq.heappush(rec.entity.ready, rec.seq)
            self.dirty.add(rec.entity)
        else:
            session.push(rec.seq)
            if session.holder is not None:
                self.dirty_sessions.add(session)
            elif rec.entity.waiting:
                self.dirty.add(rec.entity)

    def _next_ready(self, entity: Entity, now: int, ready: list[int] | None = None) -> Record | None:
        """Pop the next available record from ``ready`` (the entity's heap, or a session's); the entity's own heap
        is refilled from disk as it runs low (stale entries count, so it may also run dry first)."""
        paged = ready is None
        ready = entity.ready if ready is None else ready
        while True:
            if paged and entity.horizon is not None and len(ready) < self.hot_messages // 5:
                self._page_in(entity)
            if not ready:
                return None
            seq = heapq.heappop(ready)
            rec = entity.records.get(seq)
            if rec is None or rec.state != ACTIVE or rec.lock_token is not None:
                continue  # stale heap entry
            if rec.expires_ms is not None and rec.expires_ms <= now and not rec.stuck:
                try:
                    self._expire(rec)
                    continue
                except MoveFailed:
                    pass  # logged; deliver it rather than hide it
            return rec

    def take(self, entity: Entity, peek_lock: bool, session: Session | None = None
             ) -> tuple[Record, uuid.UUID | None, bytes] | None:
        """Hand the next available message (of ``session``, if given) to a receiver: locked (PEEK_LOCK) or
        removed (RECEIVE_AND_DELETE)."""
        now = self.clock()
        rec = self._next_ready(entity, now, session.ready if session is not None else None)
        if rec is None:
            return None
        if not peek_lock:
            self._remove(rec)
            return rec, None, self._wire(rec, None)
        token = self._lock(rec, now)
        return rec, token, self._wire(rec, self._lock_end(rec))

    def _lock(self, rec: Record, now: int) -> uuid.UUID:
        """Lock a record. In a session, the session's lock covers it (no lock of its own to expire)."""
        token = uuid.uuid4()
        rec.lock_token = token
        self.locks[token] = rec
        if rec.session is not None:
            rec.session.locked.add(rec.seq)
            return token
        rec.locked_until_ms = now + int(rec.entity.settings.lock_duration * 1000)
        self._timer(rec.locked_until_ms, 1, rec, token)
        return token

    @staticmethod
    def _lock_end(rec: Record) -> int:
        return rec.session.locked_until_ms if rec.session is not None else rec.locked_until_ms

    def _wire(self, rec: Record, locked_until_ms: int | None) -> bytes:
        extra = [_SEQ + codec.enc_long(rec.seq), _ENQ + codec.enc_timestamp(rec.enqueued_ms),
                 _STATE + codec.enc_int(rec.state)]
        if locked_until_ms is not None:
            extra.append(_LOCKED + codec.enc_timestamp(locked_until_ms))
        return rec.msg.wire(rec.delivery_count, extra)

    @property
    def busy(self) -> bool:
        """Whether :meth:`pump` has something to look at."""
        return bool(self.dirty or self.dirty_sessions)

    def pump(self) -> None:
        """Give available messages to consumers with credit, round-robin across links; a held session's
        messages go to its holder only; waiting receivers get sessions that became available."""
        while self.dirty or self.dirty_sessions:
            if self.dirty_sessions:
                self._pump_session(self.dirty_sessions.pop())
                continue
            entity = self.dirty.pop()
            if entity.sessionful:
                self._offer_sessions(entity)
                continue
            consumers = entity.consumers
            while (entity.ready or entity.horizon is not None) and consumers:
                n = len(consumers)
                for i in range(n):
                    consumer = consumers[(entity.rr + i) % n]
                    if consumer.credit() > 0:
                        entity.rr = (entity.rr + i + 1) % n
                        break
                else:
                    break  # nobody has credit
                item = self.take(entity, consumer.peek_lock)
                if item is None:
                    break
                consumer.push(*item)
            for consumer in list(consumers):
                consumer.idle()

    def _pump_session(self, session: Session) -> None:
        holder = session.holder
        if holder is None:
            return
        while session.ready and holder.credit() > 0:
            item = self.take(session.entity, holder.peek_lock, session)
            if item is None:
                break
            holder.push(*item)
        holder.idle()

    def peek(self, entity: Entity, from_seq: int, count: int, max_bytes: int | None = None,
             session_id: str | None = None) -> list[bytes]:
        """Messages from ``from_seq`` on (of one session, if given), in order, without locking (any state); at
        most ``max_bytes`` of them in total, but always the first one."""
        count = max(count, 0)
        found = {s: rec for s, rec in entity.records.items() if s >= from_seq and (
            session_id is None or (rec.session is not None and rec.session.session_id == session_id))}
        if entity.horizon is not None and session_id is None:  # and those still on disk only
            for row in self.persistence.rows(entity.key, active=True, from_seq=max(from_seq, entity.horizon),
                                             limit=count):
                if row.seq not in found:
                    found[row.seq] = Record(entity, row.seq, codec.parse_message(row.blob), row.enqueued_ms,
                                            row.delivery_count, row.state, row.expires_ms)
        out: list[bytes] = []
        size = 0
        for seq in sorted(found)[:count]:
            rec = found[seq]
            wire = self._wire(rec, self._lock_end(rec) if rec.lock_token else None)
            size += len(wire)
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(wire)
        return out

    def receive_deferred(self, entity: Entity, seqs: list[int], peek_lock: bool, session_id: str | None = None,
                         client: object = None) -> list[tuple[uuid.UUID | None, bytes]]:
        """Take deferred messages by sequence number (``receive_deferred_messages``); on an entity with sessions,
        only of the session the asking client holds."""
        now = self.clock()
        session = self.held_session(entity, session_id, client) if entity.sessionful else None
        recs = []
        for seq in seqs:
            rec = entity.records.get(seq)
            if rec is None or rec.state != DEFERRED or rec.lock_token is not None or rec.session is not session:
                raise MessageNotFound(f"deferred message {seq} not found in {entity.name}")
            recs.append(rec)
        out: list[tuple[uuid.UUID | None, bytes]] = []
        for rec in recs:
            rec.delivery_count += 1  # Service Bus counts a receive of a deferred message as a delivery
            self._persist_update(rec)
            if peek_lock:
                token = self._lock(rec, now)
                out.append((token, self._wire(rec, self._lock_end(rec))))
            else:
                self._remove(rec)
                out.append((None, self._wire(rec, None)))
        return out

    # --- settlement -----------------------------------------------------------------------------------------

    def _locked(self, token: uuid.UUID) -> Record:
        rec = self.locks.get(token)
        if rec is None or rec.gone or rec.lock_token != token or self._lock_end(rec) <= self.clock():
            raise LockLost(f"the lock {token} is lost or has expired")
        return rec

    def _unlock(self, rec: Record) -> None:
        if rec.lock_token is not None:
            self.locks.pop(rec.lock_token, None)
            rec.lock_token = None
            if rec.session is not None:
                rec.session.locked.discard(rec.seq)

    def complete(self, token: uuid.UUID) -> None:
        self._remove(self._locked(token))

    def abandon(self, token: uuid.UUID, modify: dict[str, bytes] | None = None) -> None:
        """Give the message back as a failed delivery (count +1), with ``propertiesToModify`` applied: Service
        Bus counts every abandon, whichever way the client says it (``modified`` with or without
        ``delivery-failed``, or ``update-disposition``)."""
        rec = self._locked(token)
        self._modify(rec, modify)
        self._unlock(rec)
        self._failed_delivery(rec)

    def release(self, token: uuid.UUID) -> None:
        """Give the message back untouched: no delivery-count change (AMQP ``released``)."""
        rec = self._locked(token)
        self._unlock(rec)
        if rec.state == ACTIVE:
            self._make_ready(rec)

    def defer(self, token: uuid.UUID, modify: dict[str, bytes] | None = None) -> None:
        rec = self._locked(token)
        self._modify(rec, modify)
        self._unlock(rec)
        rec.state = DEFERRED
        self._persist_update(rec)

    def dead_letter(self, token: uuid.UUID, reason: str | None, description: str | None,
                    modify: dict[str, bytes] | None = None) -> None:
        rec = self._locked(token)
        self._modify(rec, modify)
        self._dead_letter(rec, reason, description)

    def _modify(self, rec: Record, modify: dict[str, bytes] | None) -> None:
        """Apply a settlement's ``propertiesToModify`` (encoded values) to the message's application properties.

        Checked first, like a send: a value Service Bus would not store fails the settlement and changes nothing.
        """
        if not modify:
            return
        for key, raw in modify.items():
            check_value(key, raw)
        rec.msg = rec.msg.with_raw_application_properties(modify)
        self._persist_insert(rec)

    def renew(self, token: uuid.UUID) -> int:
        """Extend a lock by the queue's lock duration; returns the new expiry (ms)."""
        rec = self._locked(token)
        if rec.session is not None:
            raise LockLost(f"message {rec.seq} is locked by its session: renew the session lock instead")
        rec.locked_until_ms = self.clock() + int(rec.entity.settings.lock_duration * 1000)
        self._timer(rec.locked_until_ms, 1, rec, token)
        return rec.locked_until_ms

    def _failed_delivery(self, rec: Record) -> None:
        """Abandon or lock expiry: count the attempt, dead-letter once MaxDeliveryCount attempts failed."""
        rec.delivery_count += 1
        limit = rec.entity.settings.max_delivery_count
        if not rec.entity.is_dlq and rec.delivery_count >= limit and not rec.stuck:
            try:
                self._dead_letter(rec, MAX_DELIVERY_COUNT_EXCEEDED,
                                  f"Message could not be consumed after {limit} delivery attempts.")
                return
            except MoveFailed:
                pass  # logged; it is redelivered instead
        self._persist_update(rec)
        if rec.state == ACTIVE:
            self._make_ready(rec)

    def _expire(self, rec: Record) -> None:
        """TTL reached: dead-letter (may raise :class:`MoveFailed`) or drop, as the queue is configured."""
        if rec.entity.settings.dead_lettering_on_message_expiration:
            self._dead_letter(rec, TTL_EXPIRED, "The message expired and was dead lettered.")
        else:
            log.debug("message %d expired on %s", rec.seq, rec.entity.name)
            self._remove(rec)

    def _dead_letter(self, rec: Record, reason: str | None, description: str | None) -> None:
        """Move to the dead-letter queue: the DLQ copy is built and written before the original is removed.

        Raises :class:`MoveFailed` (after logging once) if the message cannot be re-encoded; it then stays
        exactly where it was, lock included.
        """
        source = rec.entity
        target = source.dlq or source
        try:
            props = {k: v for k, v in (("DeadLetterReason", reason), ("DeadLetterErrorDescription", description))
                     if v is not None}
            # No x-opt-deadletter-source: Service Bus sets it only on dead letters auto-forwarded elsewhere.
            msg = rec.msg.with_application_properties(props) if props else rec.msg
            moved = Record(target, rec.seq, msg, rec.enqueued_ms, rec.delivery_count, ACTIVE, None)
            self._persist_insert(moved)
        except Exception as exc:
            self._log_stuck(rec, "dead-lettering")
            raise MoveFailed(f"message {rec.seq} on {source.name} could not be dead-lettered: {exc}") from exc
        if target is source:
            self._unlock(rec)
            rec.gone = True
        else:
            self._remove(rec)
        target.last_seq = max(target.last_seq, rec.seq)
        if not self._spill(target, rec.seq):
            target.records[rec.seq] = moved
            self._make_ready(moved)

    def _remove(self, rec: Record) -> None:
        self._unlock(rec)
        rec.gone = True
        rec.entity.records.pop(rec.seq, None)
        self.persistence.delete(rec.entity.key, rec.seq)
        if rec.session is not None:
            rec.session.messages -= 1
            self._forget_if_idle(rec.session)

    # --- sessions (see .sessions) ---------------------------------------------------------------------------

    def _session(self, entity: Entity, session_id: str) -> Session:
        session = entity.sessions.get(session_id)
        if session is None:
            session = entity.sessions[session_id] = Session(entity, session_id)
        return session

    def _join_session(self, rec: Record) -> None:
        if rec.entity.sessionful:
            rec.session = self._session(rec.entity, rec.msg.session_id or "")
            rec.session.messages += 1

    @staticmethod
    def _forget_if_idle(session: Session) -> None:
        """A session exists while it has messages, a holder or a state (as in Service Bus)."""
        if (session.messages <= 0 and session.holder is None and session.state is None
                and session.entity.sessions.get(session.session_id) is session):
            del session.entity.sessions[session.session_id]

    def _head(self, session: Session) -> int | None:
        """Sequence number of the session's next available message (stale heap entries dropped), or None."""
        records = session.entity.records
        while session.ready:
            rec = records.get(session.ready[0])
            if rec is not None and rec.state == ACTIVE and rec.lock_token is None:
                return session.ready[0]
            heapq.heappop(session.ready)
        return None

    def _next_available(self, entity: Entity) -> Session | None:
        """The unheld session whose next available message is the oldest (sessions with none are skipped)."""
        best: tuple[int, Session] | None = None
        for session in entity.sessions.values():
            if session.holder is None and (head := self._head(session)) is not None and (
                    best is None or head < best[0]):
                best = (head, session)
        return best[1] if best is not None else None

    def accept_session(self, entity: Entity, session_id: str | None, holder: Holder) -> Session | None:
        """Lock a session for ``holder``: the named one (raises :class:`SessionCannotBeLocked` if another holds
        it), or with ``None`` the next available one (None when there is none: see :meth:`wait_for_session`)."""
        if session_id is None:
            session = self._next_available(entity)
            if session is None:
                return None
        else:
            session = self._session(entity, session_id)
            if session.holder is not None:
                raise SessionCannotBeLocked(f"The requested session '{session_id}' cannot be accepted. It may be "
                                            "locked by another receiver.")
        self._hold(session, holder)
        return session

    def _hold(self, session: Session, holder: Holder) -> None:
        session.holder = holder
        session.generation += 1
        self._extend(session)
        self.dirty_sessions.add(session)

    def _extend(self, session: Session) -> int:
        session.locked_until_ms = self.clock() + int(session.entity.settings.lock_duration * 1000)
        heapq.heappush(self._session_timers, (session.locked_until_ms, next(self._tie), session, session.generation))
        return session.locked_until_ms

    def wait_for_session(self, entity: Entity, waiter: Waiter) -> None:
        entity.waiting.append(waiter)

    def stop_waiting(self, entity: Entity, waiter: Waiter) -> None:
        if waiter in entity.waiting:
            entity.waiting.remove(waiter)

    def _offer_sessions(self, entity: Entity) -> None:
        while entity.waiting and (session := self._next_available(entity)) is not None:
            waiter = entity.waiting.pop(0)
            self._hold(session, waiter.holder)
            waiter.accepted(session)

    def release_session(self, session: Session, expired: bool = False) -> None:
        """End a session's lock. Closed by its holder: its locked messages are available again as they were.
        Expired: each counts a delivery (and may be dead-lettered), and the holder's link is detached."""
        holder = session.holder
        if holder is None:
            return
        session.holder = None
        session.generation += 1
        records = session.entity.records
        for seq in sorted(session.locked):
            rec = records.get(seq)
            if rec is None or rec.lock_token is None:
                continue
            self._unlock(rec)
            if expired:
                self._failed_delivery(rec)
            elif rec.state == ACTIVE:
                self._make_ready(rec)
        session.locked.clear()
        if expired:
            log.debug("session %r of %s: lock expired", session.session_id, session.entity.name)
            holder.session_lost(f"The session lock has expired on the MessageSession '{session.session_id}'. "
                                "Accept a new MessageSession.")
        self.dirty.add(session.entity)  # a waiting receiver may take it now
        self._forget_if_idle(session)

    def held_session(self, entity: Entity, session_id: str | None, client: object) -> Session:
        """The session ``client`` (a connection) holds, or :class:`SessionLockLost`."""
        session = entity.sessions.get(session_id or "") if session_id is not None else None
        if session is None or not session.held_by(client) or session.locked_until_ms <= self.clock():
            raise SessionLockLost(f"The session lock has expired on the MessageSession '{session_id}', or it is not "
                                  "held by this client. Accept the session again.")
        return session

    def renew_session(self, entity: Entity, session_id: str | None, client: object) -> int:
        """Extend the session lock by the entity's lock duration; returns the new expiry (ms)."""
        return self._extend(self.held_session(entity, session_id, client))

    def session_state(self, entity: Entity, session_id: str | None, client: object) -> bytes | None:
        return self.held_session(entity, session_id, client).state

    def set_session_state(self, entity: Entity, session_id: str | None, state: bytes | None, client: object) -> None:
        """Keep ``state`` (None clears it) until it is set again, across restarts."""
        session = self.held_session(entity, session_id, client)
        self.persistence.set_session_state(entity.key, session.session_id, state)
        session.state = state

    # --- persistence helpers --------------------------------------------------------------------------------

    def _persist_insert(self, rec: Record) -> None:
        if self.persistence.durable:
            self.persistence.insert(rec.entity.key, rec.seq, rec.state, rec.delivery_count, rec.enqueued_ms,
                                    rec.expires_ms, rec.msg.wire(rec.delivery_count, []))

    def _persist_update(self, rec: Record) -> None:
        self.persistence.update(rec.entity.key, rec.seq, rec.state, rec.delivery_count, rec.enqueued_ms,
                                rec.expires_ms)

    def counts(self, path: str) -> dict[str, int]:
        """Message counts by state for one entity (for tests and diagnostics)."""
        entity = self.entity(path)
        if entity is None:
            raise KeyError(path)
        recs = list(entity.records.values())
        return {
            "active": sum(1 for r in recs if r.state == ACTIVE and r.lock_token is None) + entity.cold,
            "locked": sum(1 for r in recs if r.lock_token is not None),
            "deferred": sum(1 for r in recs if r.state == DEFERRED and r.lock_token is None),
            "scheduled": sum(1 for r in recs if r.state == SCHEDULED),
            "total": len(recs) + entity.cold,
        }
