"""The dead-letter queue for people: see why messages landed there, and send them back after a fix.

Each entity the listener reads has its own dead-letter queue: the queue's; or, in the topic form, the
subscription's and the retry queue's (approvals whose instance never appeared end there). A resubmitted copy goes
to the source's retry queue, which in the queue form is the queue itself: in the topic form, sending it to the
topic would deliver it to every other subscription again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)

from sbworker import patches
from sbworker.core import messages
from sbworker.core.codes import DEAD_LETTER_PROPS, PROP_CONFIRM, PROP_FIRST_ATTEMPT, PROP_RETRIES
from sbworker.core.entities import Entity, Source
from sbworker.core.times import utc_text

# Properties added when dead-lettering, and our retry bookkeeping: a resubmitted copy starts afresh without them.
STRIPPED_PROPS = DEAD_LETTER_PROPS | {PROP_RETRIES, PROP_FIRST_ATTEMPT, PROP_CONFIRM}


@dataclass(frozen=True)
class DeadLettered:
    sequence_number: int
    message_id: str
    subject: str | None
    reason: str | None
    description: str | None
    enqueued_time: str | None
    delivery_count: int | None
    body_preview: str
    session_id: str | None  # kept by the dead-letter queue of a session-enabled entity


def _body(message: ServiceBusReceivedMessage) -> bytes:
    """As the listener reads it; any other AMQP body (which it dead-letters) is shown and resent as its repr."""
    try:
        return messages.body_bytes(message)
    except ValueError:
        return repr(message.body).encode()


def describe(message: ServiceBusReceivedMessage) -> DeadLettered:
    body = _body(message)
    preview = body[:200].decode("utf-8", "replace") + ("…" if len(body) > 200 else "")
    return DeadLettered(
        sequence_number=int(message.sequence_number or 0),
        message_id=str(message.message_id),
        subject=messages.text(message.subject),
        reason=messages.text(message.dead_letter_reason),
        description=messages.text(message.dead_letter_error_description),
        enqueued_time=utc_text(message.enqueued_time_utc) or None,
        delivery_count=message.delivery_count,
        body_preview=preview,
        session_id=messages.text(message.session_id),
    )


def peek(client: ServiceBusClient, entity: Entity, count: int) -> list[DeadLettered]:
    with entity.receiver(client, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        return [describe(m) for m in receiver.peek_messages(max_message_count=count)]


class Refused(Exception):
    """A chosen dead letter that cannot be acted on: it stays in the dead-letter queue, and `str()` says why."""


@dataclass(frozen=True)
class Settled:
    """What a resubmit or delete did: done, asked for but absent, dead-lettered after it started (left alone), and
    refused (left in the dead-letter queue: sequence number -> why)."""

    done: list[int]
    missing: list[int]
    arrived_since: int = 0
    refused: dict[int, str] = field(default_factory=dict)


Resubmitted = Settled  # the name `sbworker dlq resubmit` has always used


RECEIVE_WAIT = 1.0  # seconds a receive waits for messages that peeking said are there (normally they are at once)


class DeadLetterQueue:
    """The dead-letter queue of one entity, its links opened when first needed and kept until `close`.

    Service Bus receives a dead-letter queue only from its head, and by sequence number only deferred messages.
    So acting on chosen messages receives from the head up to the last chosen one (peeking first says how far
    that is), acts on the chosen, and hands every other one back with AMQP `released`, which is not a delivery:
    their delivery counts do not change and they are never left locked (sbworker.patches.release; on an SDK
    version it was not verified with, they are abandoned instead, which counts one). Only what was there when
    the call began is considered, each message at most once, so a call always ends.

    `sbworker dlq` opens one per command; the dashboard keeps one per entity, so acting on one message costs a
    peek and a receive, not three new connections.
    """

    def __init__(self, client: ServiceBusClient, source: Source, entity: Entity) -> None:
        self._client = client
        self._source = source
        self._entity = entity
        self._peeker: ServiceBusReceiver | None = None
        self._receiver: ServiceBusReceiver | None = None
        self._sender: ServiceBusSender | None = None

    def __enter__(self) -> DeadLetterQueue:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for link in (self._peeker, self._receiver, self._sender):
            if link is not None:
                with contextlib.suppress(Exception):
                    link.close()
        self._peeker = self._receiver = self._sender = None

    def open(self, *, resubmit: bool) -> None:
        """Open the links an action will need now (each costs a connection and a token exchange, about half a
        second), so the action itself takes milliseconds: the dashboard does this while asking for confirmation."""
        self._peek_link().__enter__()
        self._lock_link().__enter__()
        if resubmit:
            self._send_link().__enter__()

    def _peek_link(self) -> ServiceBusReceiver:
        if self._peeker is None:
            self._peeker = self._entity.receiver(self._client, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        return self._peeker

    def _lock_link(self) -> ServiceBusReceiver:
        if self._receiver is None:
            self._receiver = self._entity.receiver(self._client, sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                                   prefetch_count=0)
        return self._receiver

    def _send_link(self) -> ServiceBusSender:
        if self._sender is None:
            self._sender = self._source.retry_sender(self._client)
        return self._sender

    def snapshot(self, limit: int = 100_000) -> list[int]:
        """Sequence numbers in the dead-letter queue right now, in order (peeked, nothing locked)."""
        peeker = self._peek_link()
        seen: list[int] = []
        next_seq = 1
        while len(seen) < limit:
            batch = peeker.peek_messages(max_message_count=250, sequence_number=next_seq)
            if not batch:
                break
            numbers = [int(m.sequence_number or 0) for m in batch]
            seen += numbers
            next_seq = max(numbers) + 1
        return seen

    def resubmit(self, wanted: set[int] | None) -> Settled:
        """Send copies of the chosen (None: all) to the source's retry queue, then complete the dead letters. Each
        copy keeps its message id (so a start stays idempotent) and loses the dead-letter properties."""
        sender = self._send_link()

        def send_back(receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
            sender.send_messages(_copy(message))
            receiver.complete_message(message)

        return self._take(wanted, send_back)

    def delete(self, wanted: set[int]) -> Settled:
        return self._take(wanted, lambda receiver, message: receiver.complete_message(message))

    def _take(self, wanted: set[int] | None,
              act: Callable[[ServiceBusReceiver, ServiceBusReceivedMessage], None]) -> Settled:
        present = self.snapshot()
        chosen = set(present) if wanted is None else set(present) & wanted
        missing = sorted((wanted or set()) - chosen)
        if not chosen:
            return Settled([], missing)
        reach = max(i for i, seq in enumerate(present) if seq in chosen) + 1  # the head up to the last chosen one
        receiver = self._lock_link()
        done: list[int] = []
        refused: dict[int, str] = {}
        held: list[ServiceBusReceivedMessage] = []
        arrived = 0
        try:
            received = 0
            while len(done) + len(refused) < len(chosen) and received < reach:
                batch = receiver.receive_messages(max_message_count=min(reach - received, 100),
                                                  max_wait_time=RECEIVE_WAIT)
                if not batch:
                    break  # the rest are gone, or locked by someone else
                for message in batch:
                    received += 1
                    seq = int(message.sequence_number or 0)
                    if seq in chosen and seq not in done and seq not in refused:
                        try:
                            act(receiver, message)
                        except Refused as why:
                            refused[seq] = str(why)
                            held.append(message)
                        else:
                            done.append(seq)
                    else:
                        arrived += seq not in present
                        held.append(message)
        finally:
            for message in held:
                if not patches.release(receiver, message):
                    receiver.abandon_message(message)
        absent = [s for s in chosen if s not in done and s not in refused]
        return Settled(done, sorted(missing + absent), arrived, refused)


def resubmit(client: ServiceBusClient, source: Source, entity: Entity, sequence_numbers: set[int] | None) -> Settled:
    """`sbworker dlq resubmit`: see DeadLetterQueue.resubmit."""
    with DeadLetterQueue(client, source, entity) as dead:
        return dead.resubmit(sequence_numbers)


def _copy(message: ServiceBusReceivedMessage) -> ServiceBusMessage:
    props = {k: v for k, v in messages.properties(message).items() if k not in STRIPPED_PROPS}
    why = messages.uncopyable(props)
    if why is not None:
        raise Refused(f"cannot be resubmitted: {why}")
    return messages.copy(message, body=_body(message), application_properties=props)
