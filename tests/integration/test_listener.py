"""Every row of the settlement table, through the real azure-servicebus SDK (against localbus) and the real
durabletask SDK (against the in-memory backend). Outcomes are read from DTS and the dead-letter queue.

Each test runs in both source forms: the queue, and a topic subscription (with its own retry queue, and a second
subscription on the topic that the worker's retries must never reach: tests/integration/test_topic.py); and both
again in session mode (SERVICEBUS_SESSIONS=true, in `make test-slow`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from activities import approvals
from listener import settler
from listener.dispatch import Dispatcher, Outcome
from localbus import LocalBus
from sbworker.core.contract import Request
from sbworker.core.entities import Source, queue_source
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend, start_backend
from tests.fixtures.localbus import queue_bus
from tests.fixtures.target import external_servicebus
from tests.integration.harness import (
    QUEUE,
    SESSION_QUEUE_SOURCE,
    SESSION_TOPIC_SOURCE,
    TOPIC_SOURCE,
    Harness,
    listener_settings,
    topic_entities,
)
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("dts_worker")


def queues(lock: str = "PT30S", max_delivery: int = 10) -> dict[str, dict[str, Any]]:
    return {QUEUE: _settings(lock, max_delivery)}


def _settings(lock: str = "PT30S", max_delivery: int = 10) -> dict[str, Any]:
    return {"LockDuration": lock, "MaxDeliveryCount": max_delivery, "DeadLetteringOnMessageExpiration": True}


def local_bus(lock: str = "PT30S", data_path: Path | None = None) -> LocalBus:
    """Both forms' entities, with and without sessions: the queue, and the topic with the worker's subscription
    and retry queue."""
    retry_queue, topics = topic_entities(_settings(lock), sessions=True)
    return LocalBus(port=0, queues={**queues(lock), **retry_queue}, topics=topics, data_path=data_path)


# Each form also in session mode (SERVICEBUS_SESSIONS=true): the whole settlement table holds there too. Those
# rows are `slow` (make test-slow): a session-mode listener opens a connection per slot and is ready only once its
# first accept has been answered, so the 32 of them took 130 s on the shared machine (2026-12-06), as long as the
# other 46 together. tests/integration/test_sessions.py keeps session mode in the fast suite.
SOURCES = {"queue": queue_source(QUEUE), "subscription": TOPIC_SOURCE, "queue-sessions": SESSION_QUEUE_SOURCE,
           "subscription-sessions": SESSION_TOPIC_SOURCE}


def _marked(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.slow) if SOURCES[name].sessions else name


@pytest.fixture(params=[_marked(name) for name in SOURCES])
def source(request: pytest.FixtureRequest) -> Source:
    if request.param != "queue" and external_servicebus(request.config):
        pytest.skip("the topic form's and the session mode's entities are made for localbus here")
    return SOURCES[request.param]


@pytest.fixture
def bus(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalBus]:
    retry_queue, topics = topic_entities(_settings(), sessions=True)
    with queue_bus(request.config, {**queues(), **retry_queue}, data_path=tmp_path / "bus.sqlite3",
                   topics=topics) as b:
        yield b


# An early approval waits for its instance until this long after it was published. Where it must outlive the wait
# for its start, no load may exhaust the window: on a loaded machine the listener first handled such an approval
# more than 3 s after its publication and dead-lettered it at once. Its start ends the wait, so the long window
# costs those tests nothing; the one that waits for the window to close keeps a short one.
PATIENT_WINDOW = 120.0
SHORT_WINDOW = 3.0


def harness(bus: LocalBus, dts_backend: DtsBackend, source: Source, window: float = PATIENT_WINDOW) -> Harness:
    return Harness(bus, dts_backend.settings, source=source,
                   listener_settings=listener_settings(approval_not_found_window_seconds=window))


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend, source: Source) -> AsyncIterator[Harness]:
    async with harness(bus, dts_backend, source) as started:
        yield started


def reason(m: Any) -> str | None:
    return text(m.dead_letter_reason)


# --- start ----------------------------------------------------------------------------------------------------
async def test_start_is_completed_and_the_instance_runs(h: Harness) -> None:
    mid = await h.start("hello_cities")
    assert await h.wait_for_output(mid) == "Hello Tokyo!, Hello Seattle!, Hello London!"
    await h.queue_drained()
    assert await h.peek_queue(sub_queue=_dlq()) == []


async def test_start_with_explicit_instance_id_and_input(h: Harness) -> None:
    iid = f"explicit-{uuid.uuid4().hex}"
    await h.start("fan_out_fan_in", ["Oslo", "Rome"], instance_id=iid)
    assert await h.wait_for_output(iid) == ["Hello Oslo!", "Hello Rome!"]


async def test_hundred_duplicate_starts_make_one_instance(h: Harness) -> None:
    mid = uuid.uuid4().hex
    messages = [
        ServiceBusMessage(json.dumps({"orchestration": "approval_workflow", "input": {"n": i}}), subject="start",
                          message_id=mid, content_type="application/json")
        for i in range(100)
    ]
    await h.send_many(messages)
    await h.queue_drained(timeout=60)
    state = await h.wait_for_state(mid, lambda s: "awaiting_approval" in (s.serialized_custom_status or ""))
    # One message won (with concurrency, any of them); the other 99 were completed as duplicates.
    winner = json.loads(state.serialized_input or "null")
    assert winner in [{"n": i} for i in range(100)]
    # Run it to the end: once it has completed, nothing of it is in flight, and it asked for approval exactly once.
    await h.approve(mid)
    assert await h.wait_for_output(mid) == "Approved"
    assert approvals.OUTBOX.sent_for(mid) == [winner]
    assert await h.peek_queue(sub_queue=_dlq()) == []


# --- approvals ------------------------------------------------------------------------------------------------
async def test_approval_is_raised_and_the_workflow_completes(h: Harness) -> None:
    mid = await h.start("approval_workflow", {"item": "laptop"})
    await h.wait_for_state(mid, lambda s: "awaiting_approval" in (s.serialized_custom_status or ""))
    await h.approve(mid, approved=True, approver="grace")
    assert await h.wait_for_output(mid) == "Approved"
    state = await h.state(mid)
    assert state is not None and json.loads(state.serialized_custom_status or "{}")["approver"] == "grace"
    await h.queue_drained()


@pytest.mark.parametrize("approval_first", [True, False])
async def test_approval_and_start_in_either_order_concurrently(h: Harness, approval_first: bool) -> None:
    iid = f"race-{uuid.uuid4().hex}"
    start = h.start("approval_workflow", {"item": "x"}, instance_id=iid)
    approve = h.approve(iid, approved=False, approver="racer")
    if approval_first:
        await asyncio.gather(approve, start)
    else:
        await asyncio.gather(start, approve)
    assert await h.wait_for_output(iid, timeout=60) == "Rejected"
    await h.queue_drained(timeout=30)
    assert await h.peek_queue(sub_queue=_dlq()) == []


async def test_approval_published_well_before_its_start_waits_for_it(h: Harness) -> None:
    iid = f"early-{uuid.uuid4().hex}"
    mid = await h.approve(iid, approved=True)
    # Tried, no instance yet: re-enqueued as a scheduled copy, not dead-lettered. Within the window a copy is
    # always there to peek (the next one is scheduled before the one handled is completed).
    copy = await h.reenqueued(mid)
    assert copy.scheduled_enqueue_time_utc is not None
    if h.source.sessions:  # in its session still (the session-enabled entity would refuse it otherwise)
        assert copy.session_id == iid
    await h.start("approval_workflow", {"item": "x"}, instance_id=iid)
    assert await h.wait_for_output(iid, timeout=60) == "Approved"


async def test_reenqueues_go_on_through_a_replaced_sender(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's sender stops getting replies after 10,000 management calls, so the settler replaces it first; here
    after every call, so each copy goes out on a fresh sender and the approval still reaches its instance."""
    monkeypatch.setattr(settler, "SENDER_OPERATIONS", 1)
    iid = f"early-{uuid.uuid4().hex}"
    mid = await h.approve(iid, approved=True)
    await h.reenqueued(mid, times=2, timeout=60)  # the second copy already went out through a replacement
    await h.start("approval_workflow", {"item": "x"}, instance_id=iid)
    assert await h.wait_for_output(iid, timeout=60) == "Approved"


async def test_approval_for_missing_instance_is_dead_lettered_after_the_window(
        bus: LocalBus, dts_backend: DtsBackend, source: Source) -> None:
    async with harness(bus, dts_backend, source, window=SHORT_WINDOW) as h:
        iid = f"ghost-{uuid.uuid4().hex}"
        mid = await h.approve(iid)
        [dead] = await h.dead_letters(1, timeout=30)
        assert dead.message_id == mid
        assert reason(dead) == "InstanceNotFound"
        assert iid in (text(dead.dead_letter_error_description) or "")
        # The original body is intact for a later resubmit.
        assert json.loads(b"".join(dead.body))["instance_id"] == iid
        await h.queue_drained()


async def test_approval_for_finished_instance_is_dead_lettered(h: Harness) -> None:
    mid = await h.start("approval_workflow", {"timeout_seconds": 1})
    assert await h.wait_for_output(mid) == "Timed out"
    await h.approve(mid)
    [dead] = await h.dead_letters(1)
    assert reason(dead) == "InstanceNotRunning"
    assert "COMPLETED" in (text(dead.dead_letter_error_description) or "")


# --- invalid messages -----------------------------------------------------------------------------------------
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("InvalidJson", {"raw": b"{not json", "subject": "start"}, ""),
    ("InvalidEncoding", {"raw": b'{"orchestration": "\xff"}', "subject": "start"}, ""),
    ("SchemaViolation", {"body": {"orchestration": "hello_cities", "extra": 1}, "subject": "start"}, "extra"),
    ("SchemaViolation", {"body": {"instance_id": "x", "approved": "yes", "approver": "a"}, "subject": "approval"},
     "approved"),
    ("UnknownSubject", {"body": {"orchestration": "hello_cities"}, "subject": "begin"}, "begin"),
    ("UnknownSubject", {"body": {"orchestration": "hello_cities"}, "subject": None}, ""),
    ("UnknownOrchestration", {"body": {"orchestration": "say_hello"}, "subject": "start"}, "hello_cities"),
    ("TooLarge", {"body": {"orchestration": "hello_cities", "input": "x" * 70_000}, "subject": "start"}, ""),
    ("UnsupportedContentType", {"body": {"orchestration": "hello_cities"}, "subject": "start",
                                "content_type": "text/xml"}, "text/xml"),
]


# Every reason in both forms; in session mode two of them (the parse is the same whatever the session: what
# session mode changes is how the dead-lettering is applied, on the session's receiver).
INVALID_CASES = [pytest.param(src, i, *INVALID[i], id=f"{src}-{INVALID[i][0]}-{i}",
                               marks=[pytest.mark.slow] if SOURCES[src].sessions else [])
                  for src, cases in (("queue", range(len(INVALID))), ("subscription", range(len(INVALID))),
                                     ("queue-sessions", (0, 4)), ("subscription-sessions", (0, 4)))
                  for i in cases]


@pytest.mark.parametrize(("source", "case", "expected", "kwargs", "named"), INVALID_CASES, indirect=["source"])
async def test_invalid_message_is_dead_lettered_with_reason(h: Harness, case: int, expected: str,
                                                            kwargs: dict[str, Any], named: str) -> None:
    kwargs = dict(kwargs)
    mid = await h.send(kwargs.pop("body", None), **kwargs)
    [dead] = await h.dead_letters(1)
    assert dead.message_id == mid
    assert reason(dead) == expected
    description = text(dead.dead_letter_error_description) or ""
    assert description and named in description
    await h.queue_drained()


# --- failures -------------------------------------------------------------------------------------------------
async def test_dts_outage_abandons_then_recovers_without_dead_lettering(bus: LocalBus, source: Source) -> None:
    backend = start_backend()
    from listener import service

    worker = service.dts_worker(backend.settings)
    worker.start()
    try:
        async with Harness(bus, backend.settings, dispatcher_retry_seconds=0.5, source=source) as h:
            first = await h.start("hello_cities")
            await h.wait_for_output(first)
            backend.stop()
            during = await h.start("hello_cities")

            async def redelivered() -> bool:
                peeked = await h.peek_queue()
                return any(m.message_id == during and (m.delivery_count or 0) >= 1 for m in peeked)

            await eventually(redelivered, timeout=30, what="abandoned while DTS is down")
            backend.restart()
            assert await h.wait_for_output(during, timeout=60) == "Hello Tokyo!, Hello Seattle!, Hello London!"
            await h.queue_drained(timeout=30)
            assert await h.peek_queue(sub_queue=_dlq()) == []
    finally:
        worker.stop()
        backend.stop()


class ExplodingOnce(Dispatcher):
    """Our own code failing unexpectedly once (not a fake of either SDK)."""

    def __init__(self, inner: Dispatcher) -> None:
        self.inner = inner
        self.exploded = False

    async def dispatch(self, request: Request, message_id: str | None = None, **options: Any) -> Outcome:
        if not self.exploded:
            self.exploded = True
            raise RuntimeError("boom")
        return await self.inner.dispatch(request, message_id, **options)


async def test_unexpected_error_abandons_and_the_listener_keeps_running(bus: LocalBus, dts_backend: DtsBackend,
                                                                       source: Source) -> None:
    async with Harness(bus, dts_backend.settings, wrap_dispatcher=ExplodingOnce, source=source) as h:
        mid = await h.start("hello_cities")
        assert await h.wait_for_output(mid) == "Hello Tokyo!, Hello Seattle!, Hello London!"
        second = await h.start("hello_cities")
        await h.wait_for_output(second)
        await h.queue_drained()


class Slow(Dispatcher):
    def __init__(self, inner: Dispatcher, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.calls = 0

    async def dispatch(self, request: Request, message_id: str | None = None, **options: Any) -> Outcome:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return await self.inner.dispatch(request, message_id, **options)


async def test_handling_longer_than_the_lock_keeps_the_lock(tmp_path: Path, dts_backend: DtsBackend,
                                                            source: Source) -> None:
    slow: list[Slow] = []

    def wrap(d: Dispatcher) -> Dispatcher:
        slow.append(Slow(d, 5.0))  # 1.7 lock durations: expired twice over without renewals
        return slow[0]

    with local_bus(lock="PT3S") as bus:
        async with Harness(bus, dts_backend.settings, wrap_dispatcher=wrap, source=source) as h:
            mid = await h.start("hello_cities")
            await h.wait_for_output(mid, timeout=30)
            await h.queue_drained(timeout=10)
            assert slow[0].calls == 1  # renewed, never redelivered
            assert await h.peek_queue(sub_queue=_dlq()) == []


async def test_receiver_survives_a_localbus_restart(tmp_path: Path, dts_backend: DtsBackend, source: Source
                                                   ) -> None:
    bus = local_bus(data_path=tmp_path / "restart.sqlite3")
    bus.start()
    try:
        async with Harness(bus, dts_backend.settings, source=source) as h:
            first = await h.start("hello_cities")
            await h.wait_for_output(first)
            bus.stop()
            bus.start()
            await h.reset_client()
            second = await h.start("hello_cities")
            assert await h.wait_for_output(second, timeout=60) == "Hello Tokyo!, Hello Seattle!, Hello London!"
    finally:
        bus.stop()


def _dlq() -> Any:
    from azure.servicebus import ServiceBusSubQueue

    return ServiceBusSubQueue.DEAD_LETTER


async def test_a_started_instance_is_tagged_with_the_message_that_started_it(h: Harness) -> None:
    from durabletask.history import ExecutionStartedEvent

    from sbworker.core.codes import TAG_MESSAGE_ID

    mid = await h.start("hello_cities")
    await h.wait_for_output(mid)
    assert h.dts is not None
    history = await h.dts.get_orchestration_history(mid)
    started = [e for e in history if isinstance(e, ExecutionStartedEvent)]
    assert started and started[0].tags == {TAG_MESSAGE_ID: mid}
