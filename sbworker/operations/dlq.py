"""The dead-letter queue for people: see why messages landed there, and send them back after a fix.

Each entity the listener reads has its own dead-letter queue: the queue's; or, in the topic form, the
subscription's and the retry queue's (approvals whose instance never appeared end there). A resubmitted copy goes
to the source's retry queue, which in the queue form is the queue itself: in the topic form, sending it to the
topic would deliver it to every other subscription again.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue

from sbworker.core import messages
from sbworker.core.codes import DEAD_LETTER_PROPS, PROP_FIRST_ATTEMPT, PROP_RETRIES
from sbworker.core.entities import Entity, Source
from sbworker.core.times import utc_text

# Properties added when dead-lettering, and our retry bookkeeping: a resubmitted copy starts afresh without them.
STRIPPED_PROPS = DEAD_LETTER_PROPS | {PROP_RETRIES, PROP_FIRST_ATTEMPT}


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
    )


def peek(client: ServiceBusClient, entity: Entity, count: int) -> list[DeadLettered]:
    with entity.receiver(client, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        return [describe(m) for m in receiver.peek_messages(max_message_count=count)]


@dataclass(frozen=True)
class Resubmitted:
    """What `resubmit` did: sent back, asked for but absent, and dead-lettered after it started (left alone)."""

    done: list[int]
    missing: list[int]
    arrived_since: int


def snapshot(client: ServiceBusClient, entity: Entity, *, limit: int = 100_000) -> set[int]:
    """Sequence numbers in the dead-letter queue right now (peeked, nothing locked)."""
    seen: set[int] = set()
    with entity.receiver(client, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        next_seq = 1
        while len(seen) < limit:
            batch = receiver.peek_messages(max_message_count=250, sequence_number=next_seq)
            if not batch:
                break
            numbers = [int(m.sequence_number or 0) for m in batch]
            seen.update(numbers)
            next_seq = max(numbers) + 1
    return seen


def resubmit(client: ServiceBusClient, source: Source, entity: Entity, sequence_numbers: set[int] | None, *,
             max_wait: float = 2.0) -> Resubmitted:
    """Send messages dead-lettered on `entity` back to the source's retry queue, then complete their DLQ copies.

    Only what was in the dead-letter queue when the call started is considered, each at most once: a message that
    the listener dead-letters again meanwhile (a permanently invalid one, resubmitted by `--all`) gets a new
    sequence number and is left for the next look, so the call always ends. `None` means all. Each copy keeps
    its message id (so a start stays idempotent) and loses the dead-letter properties; others are abandoned
    untouched.
    """
    present = snapshot(client, entity)
    wanted = present if sequence_numbers is None else present & sequence_numbers
    done: list[int] = []
    arrived: set[int] = set()
    with entity.receiver(client, sub_queue=ServiceBusSubQueue.DEAD_LETTER, prefetch_count=0) as receiver, \
            source.retry_sender(client) as sender:
        idle_batches = 0
        while len(done) < len(wanted) and idle_batches < 3:
            batch = receiver.receive_messages(max_message_count=50, max_wait_time=max_wait)
            if not batch:
                break
            progress = False
            for message in batch:
                seq = int(message.sequence_number or 0)
                if seq in wanted and seq not in done:
                    sender.send_messages(_copy(message))
                    receiver.complete_message(message)
                    done.append(seq)
                    progress = True
                else:
                    if seq not in present:
                        arrived.add(seq)
                    receiver.abandon_message(message)
            idle_batches = 0 if progress else idle_batches + 1
    missing = sorted((sequence_numbers or set()) - set(done))
    return Resubmitted(done=done, missing=missing, arrived_since=len(arrived))


def _copy(message: ServiceBusReceivedMessage) -> ServiceBusMessage:
    props = {k: v for k, v in messages.properties(message).items() if k not in STRIPPED_PROPS}
    return messages.copy(message, body=_body(message), application_properties=props)
