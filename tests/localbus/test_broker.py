"""Queue semantics without AMQP, on a fake clock: locks, counts, dead-lettering, expiry, scheduling, storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from proton import Message, symbol, timestamp

from localbus import codec
from localbus.broker import MAX_DELIVERY_COUNT_EXCEEDED, TTL_EXPIRED, Broker, LockLost
from localbus.config import queue_settings
from localbus.store import SqlitePersistence

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def raw(body: str, **kwargs: object) -> bytes:
    return bytes(Message(body=body.encode(), inferred=True, **kwargs).encode())  # type: ignore[arg-type]


def props(wire: bytes) -> Message:
    message = Message()
    message.decode(wire)
    return message


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, persistence: SqlitePersistence | None = None, **settings: object) -> Broker:
    base: dict[str, object] = {"LockDuration": "PT10S", "MaxDeliveryCount": 3}
    return Broker({"q": queue_settings({**base, **settings})}, persistence, clock=clock)


def test_lock_expiry_redelivers_with_count_plus_one_then_dead_letters(clock: Clock) -> None:
    broker = make(clock)
    q = broker.entity("q")
    assert q is not None and q.dlq is not None
    broker.send(q, raw("a"))
    counts = []
    for _ in range(3):
        taken = broker.take(q, peek_lock=True)
        assert taken is not None
        counts.append(props(taken[2]).delivery_count)
        assert broker.take(q, peek_lock=True) is None  # locked: nobody else gets it
        clock.advance(10_001)
        broker.run_timers()
    assert counts == [0, 1, 2]
    assert broker.take(q, peek_lock=True) is None
    dead = broker.take(q.dlq, peek_lock=False)
    assert dead is not None
    assert props(dead[2]).properties["DeadLetterReason"] == MAX_DELIVERY_COUNT_EXCEEDED
    with pytest.raises(LockLost):
        broker.complete(taken[1])  # type: ignore[arg-type]


def test_release_does_not_count_but_abandon_does(clock: Clock) -> None:
    broker = make(clock)
    q = broker.entity("Q")  # names are case-insensitive
    assert q is not None
    broker.send(q, raw("a"))
    first = broker.take(q, True)
    assert first is not None and first[1] is not None
    broker.release(first[1])
    second = broker.take(q, True)
    assert second is not None and second[1] is not None and props(second[2]).delivery_count == 0
    broker.abandon(second[1])
    third = broker.take(q, True)
    assert third is not None and props(third[2]).delivery_count == 1


def test_renew_keeps_the_lock_past_its_first_expiry(clock: Clock) -> None:
    broker = make(clock)
    q = broker.entity("q")
    assert q is not None
    broker.send(q, raw("a"))
    taken = broker.take(q, True)
    assert taken is not None and taken[1] is not None
    clock.advance(8_000)
    assert broker.renew(taken[1]) == clock.now + 10_000
    clock.advance(8_000)
    broker.run_timers()
    assert broker.take(q, True) is None
    broker.complete(taken[1])
    assert broker.counts("q")["total"] == 0


def test_ttl_expiry_dead_letters_or_drops(clock: Clock) -> None:
    dead_letter = queue_settings({"DefaultMessageTimeToLive": "PT5S", "DeadLetteringOnMessageExpiration": True})
    drop = queue_settings({"DefaultMessageTimeToLive": "PT5S"})
    broker = Broker({"dl": dead_letter, "drop": drop}, clock=clock)
    for name in ("dl", "drop"):
        entity = broker.entity(name)
        assert entity is not None
        broker.send(entity, raw("short", ttl=1))  # message TTL (1 s) below the queue default wins
        broker.send(entity, raw("default"))
    clock.advance(1_001)
    broker.run_timers()
    assert broker.counts("dl")["total"] == 1 and broker.counts("drop")["total"] == 1
    clock.advance(4_000)
    broker.run_timers()
    assert broker.counts("dl")["total"] == 0 and broker.counts("drop")["total"] == 0
    assert broker.counts("dl/$DeadLetterQueue")["total"] == 2
    assert broker.counts("drop/$deadletterqueue")["total"] == 0
    dlq = broker.entity("dl/$DeadLetterQueue")
    assert dlq is not None
    taken = broker.take(dlq, False)
    assert taken is not None and props(taken[2]).properties["DeadLetterReason"] == TTL_EXPIRED


def test_duplicate_detection_window(clock: Clock) -> None:
    broker = make(clock, RequiresDuplicateDetection=True, DuplicateDetectionHistoryTimeWindow="PT2S")
    q = broker.entity("q")
    assert q is not None
    assert broker.send(q, raw("a", id="same")) == [1]
    assert broker.send(q, raw("b", id="same")) == []
    assert broker.send(q, raw("c", id="other")) == [2]
    clock.advance(2_001)
    assert broker.send(q, raw("d", id="same")) == [3]


def test_scheduled_messages_wait_and_can_be_cancelled(clock: Clock) -> None:
    broker = make(clock)
    q = broker.entity("q")
    assert q is not None
    at = timestamp(T0 + 3_000)
    [keep] = broker.send(q, raw("keep", annotations={symbol("x-opt-scheduled-enqueue-time"): at}))
    [drop] = broker.send(q, raw("drop", annotations={symbol("x-opt-scheduled-enqueue-time"): at}))
    assert broker.take(q, True) is None
    broker.cancel_scheduled(q, [drop])
    clock.advance(3_000)
    broker.run_timers()
    taken = broker.take(q, True)
    assert taken is not None and taken[0].seq == keep
    assert props(taken[2]).annotations[symbol("x-opt-enqueued-time")] == T0 + 3_000
    assert broker.take(q, True) is None


def test_sqlite_restart_restores_messages_and_frees_locks(tmp_path: Path, clock: Clock) -> None:
    broker = make(clock, SqlitePersistence(tmp_path))
    q = broker.entity("q")
    assert q is not None
    broker.send(q, raw("a"))
    broker.send(q, raw("b"))
    broker.send(q, raw("c"))
    first = broker.take(q, True)
    second = broker.take(q, True)
    assert first is not None and first[1] is not None and second is not None and second[1] is not None
    broker.complete(first[1])
    broker.abandon(second[1])
    third = broker.take(q, True)  # "b" again, now locked: must survive the restart unlocked
    assert third is not None
    broker.persistence.commit()
    broker.persistence.close()

    again = make(clock, SqlitePersistence(tmp_path))
    q2 = again.entity("q")
    assert q2 is not None
    bodies = []
    while (taken := again.take(q2, False)) is not None:
        message = props(taken[2])
        bodies.append((bytes(message.body), message.delivery_count, taken[0].seq))
    assert bodies == [(b"b", 1, 2), (b"c", 0, 3)]
    assert again.send(q2, raw("d")) == [4]  # sequence numbers continue, never reused


def test_uncommitted_writes_are_not_on_disk(tmp_path: Path, clock: Clock) -> None:
    """Group commit: acknowledgements leave only after commit(), so nothing uncommitted was acknowledged."""
    broker = make(clock, SqlitePersistence(tmp_path))
    q = broker.entity("q")
    assert q is not None
    broker.send(q, raw("committed"))
    broker.persistence.commit()
    broker.send(q, raw("in flight"))
    reader = SqlitePersistence(tmp_path)
    assert [codec.parse_message(r.blob).body for r in reader.rows()] == [b"\x00\x53\x75\xa0\x09committed"]
    reader.close()


def test_a_message_expiring_while_locked_expires_when_the_lock_ends(clock: Clock) -> None:
    broker = Broker({"q": queue_settings({"DefaultMessageTimeToLive": "PT2S", "LockDuration": "PT5S",
                                          "DeadLetteringOnMessageExpiration": True})}, clock=clock)
    q = broker.entity("q")
    assert q is not None
    broker.send(q, raw("a"))
    taken = broker.take(q, True)
    assert taken is not None and taken[1] is not None
    clock.advance(2_500)
    broker.run_timers()
    assert broker.counts("q")["locked"] == 1  # still locked: a holder may yet complete it
    broker.release(taken[1])
    clock.advance(2_501)
    broker.run_timers()
    assert broker.counts("q")["total"] == 0 and broker.counts("q/$deadletterqueue")["total"] == 1
