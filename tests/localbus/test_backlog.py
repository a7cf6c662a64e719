"""A long queue stays on disk (issue 28 item 3): with a store, an entity keeps at most ``hot_messages`` available
messages in memory and reads the rest back in order as it drains. Here ``hot_messages=20`` so that a couple of
hundred messages cross the boundary many times; ``bench.localbus_bench --backlog`` measures a million."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

from localbus import LocalBus

from .sdk import client, sender

Q = "long"
TTL = "short-lived"
HOT = 20
QUEUES: dict[str, Any] = {Q: {"LockDuration": "PT30S"},
                          TTL: {"DefaultMessageTimeToLive": "PT1S", "DeadLetteringOnMessageExpiration": True}}


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalBus]:
    with LocalBus(port=0, config_path=None, queues=QUEUES, data_path=tmp_path, hot_messages=HOT) as running:
        yield running


def _fill(sb: ServiceBusClient, queue: str, count: int, start: int = 0) -> None:
    with sender(sb, queue) as s:
        for first in range(start, start + count, 100):
            s.send_messages([ServiceBusMessage(f"{n:05d}") for n in range(first, min(first + 100, start + count))])


def _in_memory(bus: LocalBus, queue: str) -> int:
    return bus.call(lambda b: len(b.entity(queue).records))


def _drain(sb: ServiceBusClient, queue: str, **kwargs: Any) -> list[str]:
    got: list[str] = []
    with sb.get_queue_receiver(queue, prefetch_count=50, **kwargs) as r:
        while batch := r.receive_messages(max_message_count=50, max_wait_time=1):
            for m in batch:
                r.complete_message(m)
            got += [str(m) for m in batch]
    return got


def test_a_long_queue_keeps_a_bounded_window_in_memory_and_delivers_everything_in_order(bus: LocalBus) -> None:
    with client(bus) as sb:
        _fill(sb, Q, 250)
        assert bus.counts(Q)["total"] == 250 and bus.counts(Q)["active"] == 250
        assert _in_memory(bus, Q) <= HOT
        peeked = [str(m) for m in sb.get_queue_receiver(Q).peek_messages(max_message_count=60)]
        assert peeked == [f"{n:05d}" for n in range(60)]  # across the boundary, from disk
        got = _drain(sb, Q)
    assert got == [f"{n:05d}" for n in range(250)]
    assert bus.counts(Q)["total"] == 0


def test_a_restart_reads_back_only_the_window_and_loses_nothing(bus: LocalBus) -> None:
    with client(bus) as sb:
        _fill(sb, Q, 150)
    bus.stop()
    bus.start()
    assert bus.counts(Q)["total"] == 150
    assert _in_memory(bus, Q) <= HOT
    with client(bus) as sb:
        _fill(sb, Q, 30, start=150)  # behind the ones on disk
        got = _drain(sb, Q)
    assert got == [f"{n:05d}" for n in range(180)]


def test_abandoned_deferred_and_dead_lettered_messages_of_a_long_queue(bus: LocalBus) -> None:
    with client(bus) as sb:
        _fill(sb, Q, 120)
        with sb.get_queue_receiver(Q) as r:
            first = r.receive_messages(max_message_count=30, max_wait_time=5)
            r.abandon_message(first[0])
            r.defer_message(first[1])
            for m in first[2:]:
                r.dead_letter_message(m, reason="r")
        deferred_seq = first[1].sequence_number
        with sb.get_queue_receiver(Q) as r:
            [deferred] = r.receive_deferred_messages([deferred_seq])
            r.complete_message(deferred)
        rest = _drain(sb, Q)
        dead = _drain(sb, Q, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    assert rest == [f"{n:05d}" for n in [0, *range(30, 120)]]  # the abandoned one came back first
    assert dead == [f"{n:05d}" for n in range(2, 30)]


def test_a_long_dead_letter_queue_stays_on_disk_too(bus: LocalBus) -> None:
    with client(bus) as sb:
        _fill(sb, Q, 100)
        with sb.get_queue_receiver(Q, prefetch_count=50) as r:
            while batch := r.receive_messages(max_message_count=50, max_wait_time=1):
                for m in batch:
                    r.dead_letter_message(m, reason="all of them")
        dlq = f"{Q}/$DeadLetterQueue"
        assert bus.counts(dlq)["total"] == 100 and _in_memory(bus, dlq) <= HOT
        dead = _drain(sb, Q, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    assert dead == [f"{n:05d}" for n in range(100)]


def test_messages_that_expired_on_disk_are_dead_lettered_as_they_are_read(bus: LocalBus) -> None:
    with client(bus) as sb:
        _fill(sb, TTL, 100)
        time.sleep(1.2)  # every message's time to live is over; most of them are on disk
        assert _drain(sb, TTL) == []
        dead = _drain(sb, TTL, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    assert dead == [f"{n:05d}" for n in range(100)]
