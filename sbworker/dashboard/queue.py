"""The queue beside the instances: counts, the dead-letter queue, the messages that concern one instance.

One `Queue` per entity the listener reads (sbworker/core/entities.py): the queue; or, in the topic form, the
subscription and the worker's retry queue (where early approvals wait). Publishing goes to the queue or topic.

Everything here reads by peeking (nothing is locked, nothing moves), except resubmitting and deleting dead
letters, which is the command line's own code (`sbworker.operations.dlq.DeadLetterQueue`, so both behave alike)
on links kept open: acting on the chosen messages leaves every other one as it was.

Counts come from peeking the whole queue, because the management plane that reports counts (ARM, or the
emulator's HTTP port) is not something every configuration reaches. Peeking stops after `PEEK_LIMIT` messages;
the page then shows the counts as lower bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusClient as SyncServiceBusClient
from azure.servicebus import ServiceBusMessage, ServiceBusMessageState, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from sbworker import patches
from sbworker.core import clients, contract, messages
from sbworker.core.config import ServiceBusSettings
from sbworker.core.entities import Entity
from sbworker.operations import dlq

log = logging.getLogger(__name__)

PEEK_LIMIT = 5000
PEEK_BATCH = 250


@dataclass(frozen=True)
class Counts:
    active: int  # available or locked (being handled)
    scheduled: int
    dead_letter: int
    capped: bool  # PEEK_LIMIT reached in one of them: the numbers are lower bounds
    sessions: int | None = None  # session mode: sessions with a message waiting (or in hand); None otherwise


@dataclass(frozen=True)
class QueuedMessage(dlq.DeadLettered):
    """A message found in the queue or its dead-letter queue that names an instance: described as `sbworker dlq`
    describes one, plus where it is."""

    where: str  # "queue", "scheduled" or "dead-letter" (prefixed "retry queue, " for the topic form's retry queue)


@dataclass
class QueueView:
    counts: Counts
    dead_letters: list[dlq.DeadLettered] = field(default_factory=list)


class Queue:
    """One asyncio Service Bus client for the dashboard's loop, with a peek link per sub-queue kept open.

    Opening and closing a link costs a round trip and a keep-alive tick, which would add up to a second to every
    page; the links are reopened after an error.
    """

    def __init__(self, settings: ServiceBusSettings, entity: Entity | None = None) -> None:
        self.settings = settings
        self.entity = entity or settings.source.entity
        self.name = self.entity.path
        # What a page calls it: "Queue workflow-requests", "Subscription workflow-events/Subscriptions/sbworker",
        # "Retry queue workflow-events-sbworker-retry".
        self.is_retry = self.entity.topic is None and settings.source.topic is not None
        self.kind = "Subscription" if self.entity.topic else "Retry queue" if self.is_retry else "Queue"
        self.title = f"{self.kind} {self.name}"
        source = settings.source
        self.publish_target = f"topic {source.topic!r}" if source.topic else f"queue {source.publish_to!r}"
        self._client: ServiceBusClient | None = None
        self._peekers: dict[ServiceBusSubQueue | None, ServiceBusReceiver] = {}
        self._locks: dict[ServiceBusSubQueue | None, asyncio.Lock] = {}
        self._dlq: dlq.DeadLetterQueue | None = None
        self._sync_client: SyncServiceBusClient | None = None
        self._dlq_lock = threading.Lock()
        self._preparing: set[asyncio.Task[dlq.Settled]] = set()

    def _dead_letters_closed(self) -> None:
        with self._dlq_lock:
            self._close_dead_letters()

    def _sb(self) -> ServiceBusClient:
        if self._client is None:
            self._client = clients.servicebus_client(self.settings)
        return self._client

    async def close(self) -> None:
        await asyncio.to_thread(self._dead_letters_closed)
        peekers, self._peekers = list(self._peekers.values()), {}
        await asyncio.gather(*(p.close() for p in peekers), return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    async def peek_all(self, sub_queue: ServiceBusSubQueue | None = None, limit: int = PEEK_LIMIT
                       ) -> tuple[list[ServiceBusReceivedMessage], bool]:
        """Every message (up to `limit`) from the first sequence number on; True when the limit cut it short."""
        lock = self._locks.setdefault(sub_queue, asyncio.Lock())
        async with lock:
            receiver = self._peekers.get(sub_queue)
            if receiver is None:
                receiver = self.entity.receiver(self._sb(), sub_queue=sub_queue)
                self._peekers[sub_queue] = receiver
                if self.settings.source.sessions and sub_queue is None:
                    # A session-enabled entity refuses a plain receive link, and a session receiver would peek
                    # one session only (and take it from the listener): peek over the management link alone.
                    try:
                        await patches.open_for_peek(receiver)
                    except BaseException:
                        self._peekers.pop(sub_queue, None)
                        raise
            found: list[ServiceBusReceivedMessage] = []
            next_seq = 1
            try:
                while len(found) < limit:
                    batch = await receiver.peek_messages(max_message_count=min(PEEK_BATCH, limit - len(found)),
                                                         sequence_number=next_seq)
                    if not batch:
                        return found, False
                    found.extend(batch)
                    next_seq = max(int(m.sequence_number or 0) for m in batch) + 1
            except BaseException:
                self._peekers.pop(sub_queue, None)
                with contextlib.suppress(Exception):
                    await receiver.close()
                raise
            return found, True

    async def view(self) -> QueueView:
        (active, capped_active), (dead, capped_dead) = await asyncio.gather(
            self.peek_all(), self.peek_all(ServiceBusSubQueue.DEAD_LETTER))
        now = datetime.now(UTC)
        scheduled = sum(1 for m in active if is_scheduled(m, now))
        sessions = (len({m.session_id for m in active if m.session_id is not None and not is_scheduled(m, now)})
                    if self.settings.source.sessions else None)
        counts = Counts(active=len(active) - scheduled, scheduled=scheduled, dead_letter=len(dead),
                        capped=capped_active or capped_dead, sessions=sessions)
        return QueueView(counts=counts, dead_letters=[dlq.describe(m) for m in dead])

    async def counts(self) -> Counts:
        return (await self.view()).counts

    async def about_instance(self, instance_id: str, message_ids: Iterable[str]) -> list[QueuedMessage]:
        """Messages still in the queue or dead-lettered that start, or decide for, this instance."""
        wanted = set(message_ids)
        (active, _), (dead, _) = await asyncio.gather(self.peek_all(), self.peek_all(ServiceBusSubQueue.DEAD_LETTER))
        now = datetime.now(UTC)
        found = []
        retry = "retry queue, " if self.is_retry else ""
        for where, batch in (("queue", active), ("dead-letter", dead)):
            for message in batch:
                if str(message.message_id) in wanted or names_instance(message, instance_id):
                    place = "scheduled" if where == "queue" and is_scheduled(message, now) else where
                    found.append(_queued(f"{retry}{place}" if retry else place, message))
        return found

    async def send(self, message: ServiceBusMessage) -> None:
        async with self.settings.source.sender(self._sb()) as sender:
            await sender.send_messages(message)

    async def resubmit(self, sequence_numbers: set[int] | None) -> dlq.Settled:
        """`sbworker dlq resubmit`'s code, on links this queue keeps open (see dlq.DeadLetterQueue)."""
        return await asyncio.to_thread(self._dead_letters, lambda dead: dead.resubmit(sequence_numbers))

    async def delete_dead_letters(self, sequence_numbers: set[int]) -> dlq.Settled:
        """Complete the chosen dead letters; the others are handed back untouched (see dlq.DeadLetterQueue)."""
        return await asyncio.to_thread(self._dead_letters, lambda dead: dead.delete(sequence_numbers))

    def prepare(self, *, resubmit: bool) -> None:
        """Open the dead-letter links in the background (while the confirmation page is read), so that the
        action itself takes milliseconds; a failure here is the action's to report."""
        def open_links(dead: dlq.DeadLetterQueue) -> dlq.Settled:
            dead.open(resubmit=resubmit)
            return dlq.Settled([], [])

        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._dead_letters, open_links))
        self._preparing.add(task)
        task.add_done_callback(self._prepared)

    def _prepared(self, task: asyncio.Task[dlq.Settled]) -> None:
        self._preparing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("opening the dead-letter links failed (the action will retry): %s", task.exception())

    def _dead_letters(self, work: Callable[[dlq.DeadLetterQueue], dlq.Settled]) -> dlq.Settled:
        """Blocking, one at a time: the synchronous SDK's links are not shared between threads."""
        with self._dlq_lock:
            if self._dlq is None:
                self._sync_client = clients.servicebus_sync_client(self.settings)
                self._dlq = dlq.DeadLetterQueue(self._sync_client, self.settings.source, self.entity)
            try:
                return work(self._dlq)
            except BaseException:
                self._close_dead_letters()  # reopened by the next action
                raise

    def _close_dead_letters(self) -> None:
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None
        if self._sync_client is not None:
            with contextlib.suppress(Exception):
                self._sync_client.close()
            self._sync_client = None


def is_scheduled(message: ServiceBusReceivedMessage, now: datetime) -> bool:
    """The SDK's state annotation when the broker sets it; else a scheduled enqueue time still ahead."""
    if message.state == ServiceBusMessageState.SCHEDULED:
        return True
    when = message.scheduled_enqueue_time_utc
    if when is None:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) > now


def names_instance(message: ServiceBusReceivedMessage, instance_id: str) -> bool:
    """Does this start or approval body name the instance (an explicit id, or a start's own message id)?"""
    try:
        body: Any = json.loads(messages.body_bytes(message))
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    named = body.get("instance_id")
    if named is None and (messages.text(message.subject) or "").strip() == contract.SUBJECT_START:
        named = str(message.message_id)
    return named == instance_id


def _queued(where: str, message: ServiceBusReceivedMessage) -> QueuedMessage:
    return QueuedMessage(**vars(dlq.describe(message)), where=where)
