"""The dead-letter queue for people: see why messages landed there, and send them back after a fix."""

from __future__ import annotations

from dataclasses import dataclass

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue

from listener import messages
from listener.codes import DEAD_LETTER_PROPS, PROP_FIRST_ATTEMPT, PROP_RETRIES

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
        enqueued_time=message.enqueued_time_utc.isoformat() if message.enqueued_time_utc else None,
        delivery_count=message.delivery_count,
        body_preview=preview,
    )


def peek(client: ServiceBusClient, queue: str, count: int) -> list[DeadLettered]:
    with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        return [describe(m) for m in receiver.peek_messages(max_message_count=count)]


def resubmit(client: ServiceBusClient, queue: str, sequence_numbers: set[int] | None, *, max_wait: float = 2.0
             ) -> list[int]:
    """Send matching dead-lettered messages back to the queue, then complete their DLQ copies.

    `None` means all. Each copy keeps its message id (so a start stays idempotent) and loses the dead-letter
    properties. Non-matching messages are abandoned untouched. Returns the resubmitted sequence numbers.
    """
    done: list[int] = []
    with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, prefetch_count=0) as receiver, \
            client.get_queue_sender(queue) as sender:
        seen: set[int] = set()
        while True:
            batch = receiver.receive_messages(max_message_count=50, max_wait_time=max_wait)
            if not batch:
                break
            fresh = False
            for message in batch:
                seq = int(message.sequence_number or 0)
                if seq in seen:
                    receiver.abandon_message(message)
                    continue
                seen.add(seq)
                fresh = True
                if sequence_numbers is not None and seq not in sequence_numbers:
                    receiver.abandon_message(message)
                    continue
                sender.send_messages(_copy(message))
                receiver.complete_message(message)
                done.append(seq)
            if not fresh or (sequence_numbers is not None and sequence_numbers <= set(done)):
                break
    return done


def _copy(message: ServiceBusReceivedMessage) -> ServiceBusMessage:
    props = {k: v for k, v in messages.properties(message).items() if k not in STRIPPED_PROPS}
    return messages.copy(message, body=_body(message), application_properties=props)
