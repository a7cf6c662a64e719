"""Session mode (SERVICEBUS_SESSIONS=true) beyond the settlement table (which test_listener.py runs in session mode
too): order within a session, sessions side by side, idle release, a stop that releases, and a listener whose
sessions disagree with its entity.

Order is read from DTS: a session's starts name instances in publishing order, and each instance's creation time
says when the listener handled its message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient as SyncClient
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from localbus import LocalBus
from tests.fixtures.dts import DtsBackend
from tests.integration.harness import QUEUE, SESSION_QUEUE, SESSION_QUEUE_SOURCE, Harness, listener_settings
from tests.integration.test_listener import ExplodingOnce, Slow
from tests.integration.test_service import _get
from tests.support.ports import free_port
from tests.support.processes import Process, sbworker, sbworker_env
from tests.support.wait import eventually, until

pytestmark = pytest.mark.usefixtures("dts_worker")


@pytest.fixture
def bus() -> Iterator[LocalBus]:
    with LocalBus(port=0, config_path=None, queues={
        QUEUE: {"LockDuration": "PT30S"},
        SESSION_QUEUE: {"RequiresSession": True, "LockDuration": "PT30S"},
    }) as b:
        yield b


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


def starts(session: str, count: int) -> list[ServiceBusMessage]:
    """`count` starts in one session, naming instances <session>-0, <session>-1, ... in publishing order."""
    return [ServiceBusMessage(json.dumps({"orchestration": "approval_workflow", "instance_id": f"{session}-{i}",
                                          "input": {"timeout_seconds": 600}}),
                              subject="start", content_type="application/json", message_id=f"{session}-{i}",
                              session_id=session)
            for i in range(count)]


async def created(h: Harness, session: str, count: int) -> list[float]:
    """When each instance of the session was created (each must exist)."""
    times = []
    for i in range(count):
        state = await h.wait_for_state(f"{session}-{i}", lambda _s: True, timeout=60)
        times.append(state.created_at.timestamp())
    return times


async def test_each_session_in_order_while_sessions_run_side_by_side(bus: LocalBus, dts_backend: DtsBackend,
                                                                     uid: str) -> None:
    def wrap(d: Any) -> Any:  # each message takes a while, so that sessions certainly overlap
        return Slow(d, 0.3)

    sessions = [f"side-{uid}-{k}" for k in range(4)]
    async with Harness(bus, dts_backend.settings, source=SESSION_QUEUE_SOURCE, wrap_dispatcher=wrap,
                       listener_settings=listener_settings(max_concurrent_sessions=4, prefetch_count=10)) as h:
        await h.send_many([m for s in sessions for m in starts(s, 4)])
        spans = {s: await created(h, s, 4) for s in sessions}
        await h.queue_drained()
    for session, times in spans.items():
        assert times == sorted(times), f"{session} handled out of order: {times}"
    first, last = zip(*((t[0], t[-1]) for t in spans.values()), strict=True)
    assert max(first) < min(last), "the four sessions were not handled side by side"


async def test_a_message_given_back_keeps_its_place_in_its_session(bus: LocalBus, dts_backend: DtsBackend,
                                                                   uid: str) -> None:
    """The first message fails (abandoned) while the receiver already holds the next three: they go back with the
    session instead of being handled ahead of it."""
    session = f"back-{uid}"
    async with Harness(bus, dts_backend.settings, source=SESSION_QUEUE_SOURCE, wrap_dispatcher=ExplodingOnce,
                       listener_settings=listener_settings(max_concurrent_sessions=1, prefetch_count=10)) as h:
        await h.send_many(starts(session, 4))
        times = await created(h, session, 4)
        await h.queue_drained()
    assert times == sorted(times), f"handled out of order after a message was given back: {times}"


async def test_an_idle_session_is_released_and_the_next_one_accepted(bus: LocalBus, dts_backend: DtsBackend,
                                                                     uid: str, caplog: pytest.LogCaptureFixture
                                                                     ) -> None:
    """One slot: the second session can only be handled once the first was released for being idle."""
    first, second = f"idle-a-{uid}", f"idle-b-{uid}"
    caplog.set_level(logging.INFO, logger="listener.sessions")
    async with Harness(bus, dts_backend.settings, source=SESSION_QUEUE_SOURCE,
                       listener_settings=listener_settings(max_concurrent_sessions=1,
                                                           session_idle_seconds=0.3)) as h:
        await h.send_many(starts(first, 2))
        a = await created(h, first, 2)
        await h.send_many(starts(second, 2))
        b = await created(h, second, 2)
        await h.queue_drained()
    assert a[-1] < b[0]
    released = [r.getMessage() for r in caplog.records if r.getMessage().startswith("released session")]
    assert any(first in line and "(idle)" in line for line in released), released


async def test_a_stop_finishes_the_message_in_hand_and_releases_the_session(bus: LocalBus, dts_backend: DtsBackend,
                                                                           uid: str) -> None:
    """With 30 s session locks, what the stopped listener held is at once available to another receiver, its
    delivery count unchanged: the session was released, not left to expire."""
    session = f"stop-{uid}"
    slow: list[Slow] = []

    def wrap(d: Any) -> Any:
        slow.append(Slow(d, 1.0))
        return slow[0]

    h = Harness(bus, dts_backend.settings, source=SESSION_QUEUE_SOURCE, wrap_dispatcher=wrap,
                listener_settings=listener_settings(max_concurrent_sessions=2, prefetch_count=10))
    async with h:
        await h.send_many(starts(session, 3))
        await eventually(lambda: slow[0].calls >= 1, what="the first message in hand")
        await asyncio.wait_for(h.service.stop(), 30)
        assert await h.state(f"{session}-0") is not None  # the one in hand was finished, not cut off
        async with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
                client.get_queue_receiver(SESSION_QUEUE, session_id=session, max_wait_time=2) as receiver:
            rest = await receiver.receive_messages(max_message_count=5, max_wait_time=2)
            assert [str(m.message_id) for m in rest] == [f"{session}-{i}" for i in range(slow[0].calls, 3)]
            assert all(m.delivery_count == 0 for m in rest)


@pytest.mark.parametrize(("sessions", "queue", "says"), [
    ("false", SESSION_QUEUE, f"queue '{SESSION_QUEUE}' requires sessions: set SERVICEBUS_SESSIONS=true"),
    ("true", QUEUE, f"queue '{QUEUE}' does not require sessions, but SERVICEBUS_SESSIONS=true"),
], ids=["plain-listener-on-session-queue", "session-listener-on-plain-queue"])
def test_sessions_that_disagree_with_the_entity_are_one_line_and_a_503(bus: LocalBus, dts_backend: DtsBackend,
                                                                       sessions: str, queue: str, says: str) -> None:
    port = free_port()
    env = sbworker_env(bus.connection_string, dts_backend.connection_string, SERVICEBUS_QUEUE=queue,
                       SERVICEBUS_SESSIONS=sessions, HEALTH_PORT=str(port))
    with Process(["run", "--no-worker"], env).start() as svc:
        svc.wait_for_output(says)

        def not_ready() -> Any:
            code, body = _get(port, "/readyz")
            return body if code == 503 and "servicebus" in body.get("reasons", {}) else None

        body = until(not_ready, what="/readyz 503 with the reason")
        assert body["servicebus"] is False and says in body["reasons"]["servicebus"]
        assert "Traceback" not in svc.output and svc.output.count(says) == 1, svc.output[-3000:]
        assert svc.terminate() == 0


def test_sbworker_publish_sends_in_the_instances_session_or_the_one_named(bus: LocalBus,
                                                                         dts_backend: DtsBackend) -> None:
    env = sbworker_env(bus.connection_string, dts_backend.connection_string, SERVICEBUS_SESSIONS="true")
    started = sbworker("publish", "start", "hello_cities", "--instance-id", "cli-own", env=env)
    assert started.returncode == 0 and "session_id:  cli-own" in started.stdout, started.stderr
    named = sbworker("publish", "approve", "cli-own", "--approver", "ada", "--session-id", "customer-7", env=env)
    assert named.returncode == 0 and "session_id:  customer-7" in named.stdout, named.stderr
    too_long = sbworker("publish", "start", "hello_cities", "--session-id", "k" * 129, env=env)
    assert too_long.returncode == 2 and too_long.stderr.strip().endswith(
        "--session-id: a session id is 1 to 128 characters (Service Bus), got 129")
    with SyncClient.from_connection_string(bus.connection_string) as client:  # the session-enabled queue
        for session, subject in (("cli-own", "start"), ("customer-7", "approval")):
            with client.get_queue_receiver(SESSION_QUEUE, session_id=session, max_wait_time=2) as receiver:
                [message] = receiver.receive_messages(max_wait_time=2)
                assert str(message.subject) == subject
