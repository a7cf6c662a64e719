"""The topic form (SERVICEBUS_TOPIC + SERVICEBUS_SUBSCRIPTION) beyond the settlement table (which
tests/integration/test_listener.py runs in both forms): the topic's other subscriptions see each published
message exactly once and never a retry copy, a subscription filter decides what the worker gets, and the
command line and `sbworker run` work on a subscription as they do on a queue.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue

from localbus import LocalBus
from sbworker import patches
from sbworker.core.codes import PROP_FIRST_ATTEMPT, PROP_RETRIES
from sbworker.core.entities import Entity
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend
from tests.fixtures.target import external_servicebus
from tests.integration.harness import (
    SUBSCRIPTION,
    TOPIC,
    TOPIC_SOURCE,
    Harness,
    listener_settings,
    topic_entities,
)
from tests.support.ports import free_port
from tests.support.processes import Process, sbworker, sbworker_env
from tests.support.state import dead_lettered, instance_shows
from tests.support.wait import until

pytestmark = pytest.mark.usefixtures("dts_worker")

SETTINGS: dict[str, Any] = {"LockDuration": "PT30S", "MaxDeliveryCount": 10, "DeadLetteringOnMessageExpiration": True}
RETRY_DLQ = Entity(TOPIC_SOURCE.retry_queue)


@pytest.fixture(autouse=True)
def _embedded_only(request: pytest.FixtureRequest) -> None:
    if external_servicebus(request.config):
        pytest.skip("these tests make their own topic and subscriptions in localbus")


def topic_bus(rules: list[dict[str, Any]] | None = None) -> LocalBus:
    retry_queue, topics = topic_entities(SETTINGS, rules=rules)
    return LocalBus(port=0, queues=retry_queue, topics=topics)


def drain_subscription(bus: LocalBus, name: str) -> list[ServiceBusReceivedMessage]:
    """Receive and complete everything in a subscription (another team's consumer, in these tests)."""
    got: list[ServiceBusReceivedMessage] = []
    with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_subscription_receiver(TOPIC, name) as receiver:
        while batch := receiver.receive_messages(max_message_count=100, max_wait_time=1):
            for message in batch:
                receiver.complete_message(message)
            got.extend(batch)
    return got


def props(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in (message.application_properties or {}).items()}


# An early approval's not-found window counts from its publication, and on a loaded machine a short one (3 s)
# closed before the approval was first handled: it was dead-lettered at once, never re-enqueued, and its start
# came too late. A long window costs nothing (the start ends the wait; Harness.dead_lettered_from_a_copy ends it
# for an approval whose instance never comes).
PATIENT_WINDOW = 120.0


def topic_harness(bus: LocalBus, dts_backend: DtsBackend) -> Harness:
    return Harness(bus, dts_backend.settings, source=TOPIC_SOURCE,
                   listener_settings=listener_settings(approval_not_found_window_seconds=PATIENT_WINDOW))


@pytest.fixture
async def h(dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    with topic_bus() as bus:
        async with topic_harness(bus, dts_backend) as harness:
            yield harness


async def test_other_subscriptions_see_each_message_once_and_never_a_retry_copy(h: Harness) -> None:
    starts = [await h.start("hello_cities") for _ in range(3)]
    early = [f"early-{uuid.uuid4().hex}" for _ in range(2)]
    approvals = [await h.approve(iid, approved=True) for iid in early]
    invalid = await h.send(None, subject="start", raw=b"{not json")
    for mid in approvals:  # every early approval has been tried and re-enqueued (to the retry queue) once
        copy = await h.reenqueued(mid)
        assert copy.scheduled_enqueue_time_utc is not None
    late_starts = [await h.start("approval_workflow", {"item": "x"}, instance_id=iid) for iid in early]
    for mid in starts:
        await h.wait_for_output(mid)
    for iid in early:
        assert await h.wait_for_output(iid, timeout=60) == "Approved"
    ghost = f"ghost-{uuid.uuid4().hex}"
    ghost_approval = await h.approve(ghost)  # last: h stops once a copy of it waits
    assert text((await h.dead_lettered_from_a_copy(ghost_approval)).dead_letter_reason) == "InstanceNotFound"
    dead = {m.message_id: m for m in await h.dead_letters(2, timeout=30)}
    assert text(dead[invalid].dead_letter_reason) == "InvalidJson"
    await h.queue_drained(timeout=30)

    # The ghost went round the retry queue (and was dead-lettered there, after its window).
    assert h.client is not None
    async with RETRY_DLQ.receiver(h.client, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        retried = await receiver.peek_messages(max_message_count=10, sequence_number=1)
    assert [m.message_id for m in retried] == [ghost_approval]
    assert props(retried[0])[PROP_RETRIES] >= 1

    # Another team's subscription: every published message once, no copy made by our retries.
    published = [*starts, *approvals, ghost_approval, invalid, *late_starts]
    audit = drain_subscription(h.bus, "audit")
    assert Counter(str(m.message_id) for m in audit) == Counter(published)
    assert not [m.message_id for m in audit if PROP_RETRIES in props(m) or PROP_FIRST_ATTEMPT in props(m)]


def _sql(expression: str) -> list[dict[str, Any]]:
    return [{"Name": "ours", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": expression}}}]


def _correlation(**properties: str) -> list[dict[str, Any]]:
    return [{"Name": "ours", "Properties": {"FilterType": "Correlation",
                                            "CorrelationFilter": {"Properties": properties}}}]


@pytest.mark.parametrize("rules", [_sql("tenant = 'contoso' AND sys.Label IN ('start', 'approval')"),
                                   _correlation(tenant="contoso")], ids=["sql", "correlation"])
async def test_a_subscription_filter_routes_only_matching_messages_to_the_worker(
        dts_backend: DtsBackend, rules: list[dict[str, Any]]) -> None:
    ours, theirs = {"tenant": "contoso"}, {"tenant": "fabrikam"}
    with topic_bus(rules) as bus:
        async with topic_harness(bus, dts_backend) as h:
            mine = await h.start("hello_cities", application_properties=ours)
            other = await h.start("hello_cities", application_properties=theirs)
            # An early approval that matches: its retry copies keep their properties and come back to us.
            waiting = f"filtered-{uuid.uuid4().hex}"
            early = await h.approve(waiting, application_properties=ours)
            copy = await h.reenqueued(early)
            assert text(props(copy)["tenant"]) == "contoso"  # the copy keeps the property the filter routes on
            await h.start("approval_workflow", {"item": "x"}, instance_id=waiting, application_properties=ours)
            assert await h.wait_for_output(mine) == "Hello Tokyo!, Hello Seattle!, Hello London!"
            assert await h.wait_for_output(waiting, timeout=60) == "Approved"
            await h.queue_drained()
            assert await h.peek_queue(ServiceBusSubQueue.DEAD_LETTER) == []
            assert await h.state(other) is None  # never routed to the worker
            assert other in {str(m.message_id) for m in drain_subscription(bus, "audit")}


# --- `sbworker run` and the command line on a subscription ----------------------------------------------------
def topic_env(bus: LocalBus, dts_backend: DtsBackend, port: int = 0) -> dict[str, str]:
    return sbworker_env(bus.connection_string, dts_backend.connection_string, SERVICEBUS_TOPIC=TOPIC,
                        SERVICEBUS_SUBSCRIPTION=SUBSCRIPTION, APPROVAL_NOT_FOUND_WINDOW_SECONDS="1",
                        HEALTH_PORT=str(port))


@pytest.fixture(scope="module")
def stack(dts_backend: DtsBackend) -> Iterator[tuple[LocalBus, dict[str, str], int]]:
    port = free_port()
    with topic_bus() as bus:
        env = topic_env(bus, dts_backend, port)
        svc = Process(["run"], env).start()
        try:
            svc.wait_for_output(f"listening on queue '{TOPIC_SOURCE.retry_queue}'")
            svc.wait_for_output(f"listening on subscription '{SUBSCRIPTION}' of topic '{TOPIC}'")
            yield bus, env, port
        finally:
            assert svc.terminate() == 0, svc.output[-3000:]
            assert "Traceback" not in svc.output
            svc.close()


def ok(*args: str, env: dict[str, str]) -> str:
    result = sbworker(*args, env=env)
    assert result.returncode == 0, f"sbworker {' '.join(args)} -> {result.returncode}\n{result.stderr}"
    return result.stdout


def status(env: dict[str, str], instance_id: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
    """`sbworker status --json` once the instance shows `wanted` (awaited in this process, not by a command per
    poll)."""
    instance_shows(env, instance_id, wanted, timeout=timeout)
    out = ok("status", instance_id, "--json", env=env)
    assert wanted in out, out
    found: dict[str, Any] = json.loads(out)
    return found


def test_the_cli_publishes_to_the_topic_and_the_service_is_ready(stack: tuple[LocalBus, dict[str, str], int]
                                                                 ) -> None:
    bus, env, port = stack
    iid = f"cli-{uuid.uuid4().hex[:8]}"
    ok("publish", "start", "approval_workflow", "--instance-id", iid, "--input", '{"item": "desk"}', env=env)
    status(env, iid, "awaiting_approval")
    ok("publish", "approve", iid, "--approver", "ada", env=env)
    assert status(env, iid, "Approved")["custom_status"]["approver"] == "ada"
    from tests.integration.test_service import _get

    assert _get(port, "/readyz") == (200, {"status": "ready", "dts": True, "servicebus": True, "worker": True,
                                           "sdk_patches": patches.expected(), "event_loop": "uvloop"})
    seen = [m for m in drain_subscription(bus, "audit") if iid in b"".join(m.body).decode()]
    assert [text(m.subject) for m in seen] == ["start", "approval"]


def test_dlq_lists_both_dead_letter_queues_and_resubmits_to_the_retry_queue(
        stack: tuple[LocalBus, dict[str, str], int]) -> None:
    bus, env, _ = stack
    drain_subscription(bus, "audit")
    iid = f"fix-{uuid.uuid4().hex[:8]}"
    with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        # No instance: dead-lettered in the retry queue after the window. Sent there directly, as a copy is: from
        # the topic, it reaches the retry queue only if first handled within the 1 s window, which a loaded
        # machine misses (it is then dead-lettered in the subscription).
        with client.get_queue_sender(TOPIC_SOURCE.retry_queue) as retry:
            retry.send_messages(ServiceBusMessage(json.dumps({"instance_id": iid, "approved": True,
                                                              "approver": "carol"}),
                                                  subject="approval", content_type="application/json"))
        with client.get_topic_sender(TOPIC) as sender:
            bad = uuid.uuid4().hex
            sender.send_messages(ServiceBusMessage(b"{not json", subject="start", message_id=bad))

    dead_lettered(env, TOPIC_SOURCE.entity, bad)
    dead_lettered(env, RETRY_DLQ, iid)
    entries = json.loads(ok("dlq", "--json", "--peek", "100", env=env))
    by_entity = {e["entity"]: e for e in entries if e["message_id"] == bad or iid in e["body_preview"]}
    assert set(by_entity) == {TOPIC_SOURCE.entity.path, TOPIC_SOURCE.retry_queue}
    assert by_entity[TOPIC_SOURCE.retry_queue]["reason"] == "InstanceNotFound"
    assert by_entity[TOPIC_SOURCE.entity.path]["reason"] == "InvalidJson"
    human = ok("dlq", env=env)
    assert f"dead-letter queue of subscription '{SUBSCRIPTION}' of topic '{TOPIC}':" in human
    assert f"dead-letter queue of queue '{TOPIC_SOURCE.retry_queue}':" in human
    only_retry = json.loads(ok("dlq", "--retry-queue", "--json", env=env))
    assert {e["entity"] for e in only_retry} == {TOPIC_SOURCE.retry_queue}

    # The fix, then the resubmit: the approval comes back through the retry queue, not the topic.
    ok("publish", "start", "approval_workflow", "--instance-id", iid, env=env)
    status(env, iid, "awaiting_approval")
    seq = str(by_entity[TOPIC_SOURCE.retry_queue]["sequence_number"])
    out = ok("dlq", "--retry-queue", "resubmit", seq, env=env)
    assert f"to '{TOPIC_SOURCE.retry_queue}': {seq}" in out
    assert status(env, iid, "Approved")["custom_status"]["approver"] == "carol"
    audit = [str(m.message_id) for m in drain_subscription(bus, "audit")]
    assert audit.count(bad) == 1 and len([m for m in audit if m != bad]) == 1  # the start; the approval never


def test_a_missing_retry_queue_is_named_in_the_log_and_readyz(dts_backend: DtsBackend) -> None:
    port = free_port()
    with topic_bus() as bus:
        env = sbworker_env(bus.connection_string, dts_backend.connection_string, SERVICEBUS_TOPIC=TOPIC,
                        SERVICEBUS_SUBSCRIPTION=SUBSCRIPTION, SERVICEBUS_RETRY_QUEUE="nobody-made-this",
                        HEALTH_PORT=str(port))
        svc = Process(["run", "--no-worker"], env).start()
        try:
            svc.wait_for_output("queue 'nobody-made-this' does not exist (SERVICEBUS_RETRY_QUEUE)")
            from tests.integration.test_service import _get

            code, body = _get(port, "/readyz")
            assert code == 503 and body["servicebus"] is False
            assert svc.terminate() == 0
        finally:
            svc.close()


def test_half_a_topic_pair_is_one_line_and_exit_2(dts_backend: DtsBackend) -> None:
    with topic_bus() as bus:  # the stack's settings without its service: the commands stop at the configuration
        env = topic_env(bus, dts_backend)
        broken = {k: v for k, v in env.items() if k != "SERVICEBUS_SUBSCRIPTION"}
        result = sbworker("run", env=broken)
        assert result.returncode == 2
        assert result.stderr.strip() == ("configuration error: SERVICEBUS_SUBSCRIPTION: required with "
                                         "SERVICEBUS_TOPIC (the topic form needs both)")
        both = {**env, "SERVICEBUS_QUEUE": "workflow-requests"}
        assert sbworker("publish", "start", "hello_cities", env=both).returncode == 2


def test_sigterm_on_a_subscription_settles_everything_in_flight_exactly_once(dts_backend: DtsBackend) -> None:
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    from sbworker.core import clients

    with topic_bus() as bus, clients.dts_client(dts_backend.settings) as dts:
        assert isinstance(dts, DurableTaskSchedulerClient)
        env = sbworker_env(bus.connection_string, dts_backend.connection_string, SERVICEBUS_TOPIC=TOPIC,
                        SERVICEBUS_SUBSCRIPTION=SUBSCRIPTION, MAX_CONCURRENT_MESSAGES="4", PREFETCH_COUNT="20",
                        SHUTDOWN_GRACE_SECONDS="20")
        svc = Process(["run", "--no-worker"], env).start()
        try:
            svc.wait_for_output(f"listening on subscription '{SUBSCRIPTION}'")
            ids = [uuid.uuid4().hex for _ in range(200)]
            with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
                    client.get_topic_sender(TOPIC) as sender:
                for i in range(0, len(ids), 100):
                    sender.send_messages([ServiceBusMessage(b'{"orchestration": "hello_cities"}', subject="start",
                                                            message_id=mid) for mid in ids[i:i + 100]])
            until(lambda: dts.get_orchestration_state(ids[10]) is not None, what="the 11th start's instance",
                  timeout=30, interval=0.02)  # in flight: SIGTERM now
            assert svc.terminate() == 0, svc.output[-3000:]
            assert "Traceback" not in svc.output
        finally:
            svc.close()
        started = {i for i in ids if dts.get_orchestration_state(i) is not None}
        assert started
        # Nothing left locked: what was not started is receivable at once (the lock is 30 s).
        with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
                client.get_subscription_receiver(TOPIC, SUBSCRIPTION, receive_mode="receiveanddelete") as r:
            remaining: list[str] = []
            while batch := r.receive_messages(max_message_count=100, max_wait_time=2):
                remaining.extend(str(m.message_id) for m in batch)
        assert len(remaining) == len(set(remaining))
        assert started.isdisjoint(remaining) and started | set(remaining) == set(ids)
