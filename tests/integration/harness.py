"""The service's listeners (listener.service.Service, without its worker) in the test's event loop, against a real
localbus and the session's DTS backend.

Outcomes are read back from DTS and from the dead-letter queue through the real SDKs, never from our counters.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient
from durabletask.client import OrchestrationState

from listener.dispatch import CONFIRM_RAISE_SECONDS, Dispatcher, is_transient
from listener.receiver import Listener
from listener.service import Service
from localbus import LocalBus
from sbworker import patches
from sbworker.core import clients, config, messages
from sbworker.core.codes import PROP_RETRIES
from sbworker.core.config import ListenerSettings, ServiceBusSettings
from sbworker.core.entities import Source, queue_source, topic_source
from sbworker.core.limits import DEFAULT_LIMITS, Limits
from tests.fixtures.target import ExternalBus
from tests.support.wait import eventually

QUEUE = "workflow-requests"
TOPIC = "workflow-events"
SUBSCRIPTION = "sbworker"
# The topic form: the listener reads the subscription and its own retry queue (sbworker/core/entities.py).
TOPIC_SOURCE = topic_source(TOPIC, SUBSCRIPTION)
# Session mode (SERVICEBUS_SESSIONS=true): a session-enabled queue, and a session-enabled subscription of the same
# topic with its own session-enabled retry queue, named as in the shipped Config.json.
SESSION_QUEUE = "workflow-requests-sessions"
SESSION_SUBSCRIPTION = "sbworker-sessions"
SESSION_QUEUE_SOURCE = queue_source(SESSION_QUEUE, sessions=True)
SESSION_TOPIC_SOURCE = topic_source(TOPIC, SESSION_SUBSCRIPTION, sessions=True)
WITH_SESSION_ID = [{"Name": "with-session-id",
                    "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "sys.SessionId IS NOT NULL"}}}]

DEFAULT_LISTENER = ListenerSettings(
    max_concurrent_messages=16,
    prefetch_count=0,
    max_message_bytes=65_536,
    approval_not_found_window_seconds=30.0,
    shutdown_grace_seconds=10.0,
    health_port=0,
    log_level="INFO",
    max_concurrent_sessions=4,  # session mode: each slot is a connection of its own; four show concurrency
)


def servicebus_settings(bus: LocalBus, queue: str | Source = QUEUE) -> ServiceBusSettings:
    source = queue if isinstance(queue, Source) else queue_source(queue)
    return ServiceBusSettings(source, config.ConnectionString(bus.connection_string))


def topic_entities(subscription_settings: dict[str, Any], *, others: tuple[str, ...] = ("audit",),
                   rules: list[dict[str, Any]] | None = None, sessions: bool = False
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """localbus `queues=` and `topics=` for the topic form: the retry queue, and the topic with the worker's
    subscription (its `rules`, or every message) beside other subscriptions that take every message.

    With `sessions`, the session mode's entities too: the session queue, the session subscription (messages with
    a session id only) and its retry queue."""
    worker: dict[str, Any] = {"Name": SUBSCRIPTION, "Properties": subscription_settings}
    if rules is not None:
        worker["Rules"] = rules
    subscriptions = [worker, *({"Name": name} for name in others)]
    queues = {TOPIC_SOURCE.retry_queue: subscription_settings}
    if sessions:
        with_sessions = {**subscription_settings, "RequiresSession": True}
        subscriptions.append({"Name": SESSION_SUBSCRIPTION, "Properties": with_sessions, "Rules": WITH_SESSION_ID})
        queues.update({SESSION_QUEUE: with_sessions, SESSION_TOPIC_SOURCE.retry_queue: with_sessions})
    return queues, {TOPIC: {"Properties": {}, "Subscriptions": subscriptions}}


class Harness:
    def __init__(self, bus: LocalBus, dts_settings: config.DtsSettings, *, queue: str = QUEUE,
                 listener_settings: ListenerSettings = DEFAULT_LISTENER, dispatcher_retry_seconds: float = 2.0,
                 wrap_dispatcher: Callable[[Dispatcher], Dispatcher] | None = None,
                 source: Source | None = None, limits: Limits = DEFAULT_LIMITS,
                 confirm_seconds: float = CONFIRM_RAISE_SECONDS) -> None:
        """`source` (default: the queue `queue`) may be the topic form: then one listener per entity it reads,
        publishing goes to the topic, and the peeks cover the subscription and the retry queue. `confirm_seconds`:
        how long a raise is confirmed before a confirm copy takes over (listener.dispatch.CONFIRM_RAISE_SECONDS)."""
        self.bus = bus
        self.source = source or queue_source(queue)
        self.queue = self.source.entity.path
        self.dts_settings = dts_settings
        self.listener_settings = listener_settings
        self.retry_seconds = dispatcher_retry_seconds
        self.wrap_dispatcher = wrap_dispatcher
        self.limits = limits
        self.confirm_seconds = confirm_seconds
        self.service: Service
        self.dts: AsyncDurableTaskSchedulerClient | None = None
        self.client: ServiceBusClient | None = None
        self._sender: Any = None
        self._send_lock = asyncio.Lock()  # one link; the SDK does not guard concurrent first use
        self._peekers: dict[Any, Any] = {}
        # On an external Service Bus the queue is shared with earlier tests: look only at our own messages.
        self._own: set[str] | None = set() if isinstance(bus, ExternalBus) else None

    async def __aenter__(self) -> Harness:
        self.dts = clients.dts_async_client(self.dts_settings)
        dispatcher = Dispatcher(self.dts, retry_seconds=self.retry_seconds, call_timeout=5.0,
                                confirm_seconds=self.confirm_seconds)
        if self.wrap_dispatcher:
            dispatcher = self.wrap_dispatcher(dispatcher)
        # The service as `sbworker run --no-worker` runs it (the session's worker runs the orchestrations).
        settings = config.Settings(dts=self.dts_settings, servicebus=servicebus_settings(self.bus, self.source),
                                   listener=self.listener_settings, limits=self.limits)
        self.service = Service(settings, with_worker=False, dispatcher=dispatcher)
        self.client = ServiceBusClient.from_connection_string(self.bus.connection_string)
        await self.service.start()
        await self.service.ready(20)
        return self

    @property
    def listener(self) -> Listener:
        """The listener of the queue or subscription (the topic form has a second one, on the retry queue)."""
        return self.service.listeners[0]

    async def reset_client(self) -> None:
        """A fresh Service Bus client (after the broker restarted under the old one)."""
        await self._close_links()
        if self.client is not None:
            await self.client.close()
        self.client = ServiceBusClient.from_connection_string(self.bus.connection_string)

    async def _close_links(self) -> None:
        # Each close is a round trip to the broker: close them together, not one after another.
        links = [link for link in [self._sender, *self._peekers.values()] if link is not None]
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
        self._sender = None
        self._peekers = {}

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(asyncio.wait_for(self.service.stop(), 60), self._close_links(), return_exceptions=True)
        if self.client is not None:
            await self.client.close()
        if self.dts is not None:
            await self.dts.close()

    # --- publishing -------------------------------------------------------------------------------------------
    async def send(self, body: Any, *, subject: str | None, message_id: str | None = None,
                   content_type: str | None = "application/json", raw: bytes | None = None,
                   application_properties: dict[str | bytes, Any] | None = None, session_id: str | None = None
                   ) -> str:
        """In session mode the session id is the instance id's (the message id when the body names none), as
        `sbworker publish` sets it, unless `session_id` says otherwise."""
        assert self.client is not None
        payload = raw if raw is not None else json.dumps(body).encode()
        mid = message_id or uuid.uuid4().hex
        if self._own is not None:
            self._own.add(mid)
        if self.source.sessions and session_id is None:
            named = body.get("instance_id") if isinstance(body, dict) else None
            session_id = named if isinstance(named, str) and named else mid
        async with self._send_lock:
            if self._sender is None:
                self._sender = self.source.sender(self.client)
            await self._sender.send_messages(ServiceBusMessage(payload, subject=subject, message_id=mid,
                                                               content_type=content_type, session_id=session_id,
                                                               application_properties=application_properties))
        return mid

    async def send_many(self, messages: list[ServiceBusMessage]) -> None:
        """In session mode, a message without a session id is sent in the session its message id names."""
        assert self.client is not None
        if self._own is not None:
            self._own.update(str(m.message_id) for m in messages)
        if self.source.sessions:
            for m in messages:
                m.session_id = m.session_id or str(m.message_id)
        async with self.source.sender(self.client) as sender:
            for i in range(0, len(messages), 100):
                batch = await sender.create_message_batch()
                for m in messages[i:i + 100]:
                    batch.add_message(m)
                await sender.send_messages(batch)

    async def start(self, orchestration: str, input: Any = None, **kw: Any) -> str:
        body: dict[str, Any] = {"orchestration": orchestration}
        if input is not None:
            body["input"] = input
        if "instance_id" in kw:
            body["instance_id"] = kw.pop("instance_id")
        return await self.send(body, subject="start", **kw)

    async def approve(self, instance_id: str, approved: bool = True, approver: str = "ada", **kw: Any) -> str:
        return await self.send({"instance_id": instance_id, "approved": approved, "approver": approver},
                               subject="approval", **kw)

    # --- observing --------------------------------------------------------------------------------------------
    async def state(self, instance_id: str) -> OrchestrationState | None:
        assert self.dts is not None
        return await self.dts.get_orchestration_state(instance_id)

    async def wait_for_state(self, instance_id: str, predicate: Callable[[OrchestrationState], bool],
                             timeout: float = 20.0) -> OrchestrationState:
        async def check() -> OrchestrationState | None:
            try:
                s = await self.state(instance_id)
            except Exception as error:  # the backend may be restarting in fault tests
                if not is_transient(error):
                    raise
                return None
            return s if s is not None and predicate(s) else None

        result: OrchestrationState = await eventually(check, timeout=timeout, what=f"state of {instance_id}")
        return result

    async def wait_for_output(self, instance_id: str, timeout: float = 20.0) -> Any:
        s = await self.wait_for_state(instance_id, lambda s: s.runtime_status.name in ("COMPLETED", "FAILED"),
                                      timeout)
        assert s.runtime_status.name == "COMPLETED", s.failure_details
        return json.loads(s.serialized_output or "null")

    async def dead_letters(self, count: int, timeout: float = 20.0) -> list[ServiceBusReceivedMessage]:
        """Wait until the DLQ holds at least `count` messages; return them (peeked, left in place)."""
        assert self.client is not None

        async def check() -> list[ServiceBusReceivedMessage] | None:
            found = await self.peek_queue(ServiceBusSubQueue.DEAD_LETTER, max(count, 1) + 50)
            return found if len(found) >= count else None

        result: list[ServiceBusReceivedMessage] = await eventually(check, timeout=timeout,
                                                                    what=f"{count} dead-lettered")
        return result

    async def peek_queue(self, sub_queue: ServiceBusSubQueue | None = None, n: int = 100
                         ) -> list[ServiceBusReceivedMessage]:
        """What every entity the listener reads holds (the queue; or the subscription, then the retry queue)."""
        assert self.client is not None
        found: list[ServiceBusReceivedMessage] = []
        for entity in self.source.receive_from:
            key = (entity, sub_queue)
            if key not in self._peekers:
                self._peekers[key] = entity.receiver(self.client, sub_queue=sub_queue)
                if self.source.sessions and sub_queue is None:  # the entity refuses a plain receive link
                    await patches.open_for_peek(self._peekers[key])
            # From sequence number 1 each time: a receiver's peek otherwise resumes after the last one it saw.
            found += await self._peekers[key].peek_messages(max_message_count=n if self._own is None else 1000,
                                                            sequence_number=1)
        if self._own is not None:
            found = [m for m in found if str(m.message_id) in self._own]
        return found

    async def reenqueued(self, message_id: str, *, times: int = 1, timeout: float = 20.0
                         ) -> ServiceBusReceivedMessage:
        """Wait until a copy of `message_id` sits in the queue (the topic form: its retry queue), re-enqueued at
        least `times` times (its retry count, a property only the listener's re-enqueue writes)."""

        async def check() -> ServiceBusReceivedMessage | None:
            for found in await self.peek_queue():
                retries = messages.prop(found, PROP_RETRIES)
                if str(found.message_id) == message_id and isinstance(retries, int) and retries >= times:
                    return found
            return None

        copy: ServiceBusReceivedMessage = await eventually(check, timeout=timeout,
                                                            what=f"{message_id} re-enqueued {times}x")
        return copy

    async def dead_lettered_from_a_copy(self, message_id: str, timeout: float = 30.0) -> ServiceBusReceivedMessage:
        """An early approval or event whose instance never comes, dead-lettered from a re-enqueued copy: once a copy
        waits, this harness's service stops (for good) and one whose window has closed takes the copy when it
        falls due. A short window does not make this certain: it counts from the publication, and on a loaded
        machine the first handling came after it had closed, so the original was dead-lettered, not a copy."""
        await self.reenqueued(message_id)
        await self.service.stop()
        closed = replace(self.listener_settings, approval_not_found_window_seconds=0.0)

        async def dead_copy() -> ServiceBusReceivedMessage | None:
            return next((m for m in await self.peek_queue(ServiceBusSubQueue.DEAD_LETTER)
                         if str(m.message_id) == message_id and messages.prop(m, PROP_RETRIES)), None)

        async with Harness(self.bus, self.dts_settings, source=self.source, listener_settings=closed):
            dead: ServiceBusReceivedMessage = await eventually(dead_copy, timeout=timeout,
                                                               what=f"a copy of {message_id} dead-lettered")
        return dead

    async def queue_drained(self, timeout: float = 20.0) -> None:
        """Nothing left in the queue (active or locked): every message was settled for good."""

        async def check() -> bool:
            return not await self.peek_queue()

        await eventually(check, timeout=timeout, what="queue drained")


def listener_settings(**overrides: Any) -> ListenerSettings:
    return replace(DEFAULT_LISTENER, **overrides)
