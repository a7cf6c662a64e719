"""The queue beside the instances: counts, the dead-letter queue, the messages that concern one instance.

One `Queue` per entity the listener reads (sbworker/core/entities.py): the queue; or, in the topic form, the
subscription and the worker's retry queue (where early approvals wait). Publishing goes to the queue or topic.

Everything here reads by peeking (nothing is locked, nothing moves), except `delete_dead_letters`, which
receives from the dead-letter queue and completes the chosen messages, and resubmission, which is the command
line's own `sbworker.operations.dlq.resubmit` (the same code, so both behave alike).

Counts come from peeking the whole queue, because the management plane that reports counts (ARM, or the
emulator's HTTP port) is not something every configuration reaches. Peeking stops after `PEEK_LIMIT` messages;
the page then shows the counts as lower bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusMessageState, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

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

    def _sb(self) -> ServiceBusClient:
        if self._client is None:
            self._client = clients.servicebus_client(self.settings)
        return self._client

    async def close(self) -> None:
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
        counts = Counts(active=len(active) - scheduled, scheduled=scheduled, dead_letter=len(dead),
                        capped=capped_active or capped_dead)
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

    async def delete_dead_letters(self, sequence_numbers: set[int], *, max_wait: float = 1.0) -> list[int]:
        """Receive from the dead-letter queue and complete the chosen messages; the others are put back.

        Service Bus cannot receive a given sequence number (only deferred ones), so this reads until it has seen
        every chosen message or the dead-letter queue has nothing more to give. Returns what was deleted.
        """
        done: list[int] = []
        seen: set[int] = set()
        async with self.entity.receiver(self._sb(), sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                        prefetch_count=0) as receiver:
            while len(done) < len(sequence_numbers):
                batch = await receiver.receive_messages(max_message_count=50, max_wait_time=max_wait)
                if not batch:
                    break
                fresh = False
                for message in batch:
                    seq = int(message.sequence_number or 0)
                    fresh = fresh or seq not in seen
                    seen.add(seq)
                    if seq in sequence_numbers and seq not in done:
                        await receiver.complete_message(message)
                        done.append(seq)
                    else:
                        await receiver.abandon_message(message)
                if not fresh:
                    break  # only messages we already put back: the chosen ones are not there
        return done

    def resubmit(self, sequence_numbers: set[int] | None) -> dlq.Resubmitted:
        """Blocking: `sbworker dlq resubmit`'s code with its own client; call it in a thread."""
        with clients.servicebus_sync_client(self.settings) as client:
            return dlq.resubmit(client, self.settings.source, self.entity, sequence_numbers)


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
