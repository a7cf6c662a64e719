"""A typed publisher for application code: start orchestrations, approve, raise declared events, through the queue.

    from sbworker.operations.publisher import Publisher

    with Publisher.from_environment() as publisher:          # the service's own settings (SERVICEBUS_*)
        sent = publisher.start("invoice_payment", {"invoice": "I-1", "amount_cents": 4500, "currency": "EUR"})
        publisher.raise_event(sent.instance_id, "PaymentReceived",
                              {"amount_cents": 4500, "currency": "EUR", "reference": "psp-1"})

`AsyncPublisher` is the same on the asyncio client. Both check every message with the listener's own parser before
sending (`Rejected`, a ``ValueError`` carrying the dead-letter reason the listener would give), and send it plain or,
with ``cloudevents="structured"`` or ``"binary"``, as a CloudEvent. Each keeps one sender open until closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from sbworker.core import clients, config
from sbworker.core.cloudevents import Mode
from sbworker.core.config import DEFAULT_QUEUE, Settings
from sbworker.core.contract import Rejected
from sbworker.core.limits import DEFAULT_LIMITS, Limits
from sbworker.operations.publish import DEFAULT_SOURCE, Messages, Outgoing

if TYPE_CHECKING:
    from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient

__all__ = ["AsyncPublisher", "Published", "Publisher", "Rejected"]


@dataclass(frozen=True)
class Published:
    """What was sent: the message id, the instance it starts or targets, and the CloudEvents id if sent as one."""

    message_id: str
    instance_id: str
    event_id: str | None = None
    trace_id: str | None = None  # when traced: the PRODUCER span's trace, which the listener's span continues
    session_id: str | None = None  # the session it was sent in (session-enabled queues and subscriptions)


def _where(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """The service's destination, bounds and session mode, under the caller's options."""
    source = settings.servicebus.source
    where: dict[str, Any] = {"topic": source.topic} if source.topic is not None else {"queue": source.entity.name}
    return {**where, "bounds": settings.limits, "sessions": source.sessions, **options}


class _Base:
    def __init__(self, *, queue: str | None, topic: str | None, cloudevents: Mode | None, source: str,
                 bounds: Limits, traced: bool, sessions: bool) -> None:
        if queue is not None and topic is not None:
            raise ValueError("give a queue or a topic, not both")
        self._topic = topic
        self._queue = queue or DEFAULT_QUEUE
        self.messages = Messages(cloudevents=cloudevents, source=source, bounds=bounds, sessions=sessions)
        self._traced = traced

    @property
    def destination(self) -> str:
        """The queue or topic messages go to."""
        return self._topic or self._queue

    def _open_sender(self, client: Any) -> Any:
        """Either client's sender: the sync and asyncio clients name these calls alike."""
        if self._topic is not None:
            return client.get_topic_sender(self._topic)
        return client.get_queue_sender(self._queue)

    def _start(self, orchestration: str, input: Any, instance_id: str | None, start_at: datetime | None,
               message_id: str | None, session_id: str | None) -> Outgoing:
        return self.messages.start(orchestration, input, instance_id=instance_id, start_at=start_at,
                                   message_id=message_id, session_id=session_id)

    def _span(self, message: ServiceBusMessage) -> Any:
        from sbworker.observability import tracing

        return tracing.producer_span(self.destination, message)

    @staticmethod
    def _published(outgoing: Outgoing, trace_id: str | None) -> Published:
        return Published(outgoing.message_id, outgoing.instance_id, outgoing.event_id, trace_id,
                         outgoing.message.session_id)


class Publisher(_Base):
    """Publishes to one queue (or topic) with a synchronous `azure.servicebus.ServiceBusClient`."""

    def __init__(self, client: ServiceBusClient, *, queue: str | None = None, topic: str | None = None,
                 cloudevents: Mode | None = None, source: str = DEFAULT_SOURCE, bounds: Limits = DEFAULT_LIMITS,
                 traced: bool = False, owns_client: bool = False, sessions: bool = False) -> None:
        """`traced`: send inside an OpenTelemetry PRODUCER span (the global tracer provider's), so the listener's
        span continues the caller's trace. `owns_client`: `close` closes the client too. `sessions`: the queue or
        subscription requires sessions; each message then goes in its instance's session unless a call names
        another `session_id` (`from_settings` follows SERVICEBUS_SESSIONS)."""
        super().__init__(queue=queue, topic=topic, cloudevents=cloudevents, source=source, bounds=bounds,
                         traced=traced, sessions=sessions)
        self._client = client
        self._owns_client = owns_client
        self._sender: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Publisher:
        """The service's queue or topic and credentials (SERVICEBUS_*), and its bounds (MAX_*_BYTES)."""
        return cls(clients.servicebus_sync_client(settings.servicebus), **_where(settings, options), owns_client=True)

    @classmethod
    def from_environment(cls, **options: Any) -> Publisher:
        return cls.from_settings(config.load(), **options)

    def start(self, orchestration: str, input: Any = None, *, instance_id: str | None = None,
              start_at: datetime | None = None, message_id: str | None = None, session_id: str | None = None
              ) -> Published:
        return self.send(self._start(orchestration, input, instance_id, start_at, message_id, session_id))

    def approve(self, instance_id: str, *, approver: str, comment: str | None = None,
                message_id: str | None = None, session_id: str | None = None) -> Published:
        return self.send(self.messages.approval(instance_id, True, approver, comment, message_id=message_id,
                                                session_id=session_id))

    def reject(self, instance_id: str, *, approver: str, comment: str | None = None,
               message_id: str | None = None, session_id: str | None = None) -> Published:
        return self.send(self.messages.approval(instance_id, False, approver, comment, message_id=message_id,
                                                session_id=session_id))

    def raise_event(self, instance_id: str, name: str, data: Any, *, message_id: str | None = None,
                    session_id: str | None = None) -> Published:
        return self.send(self.messages.event(instance_id, name, data, message_id=message_id, session_id=session_id))

    def send(self, outgoing: Outgoing) -> Published:
        """Send a message built by `self.messages` (already checked)."""
        if self._sender is None:
            self._sender = self._open_sender(self._client)
        if not self._traced:
            self._sender.send_messages(outgoing.message)
            return self._published(outgoing, None)
        from sbworker.observability.tracing import trace_id_hex

        with self._span(outgoing.message) as span:
            self._sender.send_messages(outgoing.message)
        return self._published(outgoing, trace_id_hex(span))

    def close(self) -> None:
        sender, self._sender = self._sender, None
        try:
            if sender is not None:
                sender.close()
        finally:
            if self._owns_client:
                self._client.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher(_Base):
    """`Publisher` on the asyncio client (`azure.servicebus.aio.ServiceBusClient`)."""

    def __init__(self, client: AsyncServiceBusClient, *, queue: str | None = None, topic: str | None = None,
                 cloudevents: Mode | None = None, source: str = DEFAULT_SOURCE, bounds: Limits = DEFAULT_LIMITS,
                 traced: bool = False, owns_client: bool = False, sessions: bool = False) -> None:
        super().__init__(queue=queue, topic=topic, cloudevents=cloudevents, source=source, bounds=bounds,
                         traced=traced, sessions=sessions)
        self._client = client
        self._owns_client = owns_client
        self._sender: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> AsyncPublisher:
        return cls(clients.servicebus_client(settings.servicebus), **_where(settings, options), owns_client=True)

    @classmethod
    def from_environment(cls, **options: Any) -> AsyncPublisher:
        return cls.from_settings(config.load(), **options)

    async def start(self, orchestration: str, input: Any = None, *, instance_id: str | None = None,
                    start_at: datetime | None = None, message_id: str | None = None, session_id: str | None = None
                    ) -> Published:
        return await self.send(self._start(orchestration, input, instance_id, start_at, message_id, session_id))

    async def approve(self, instance_id: str, *, approver: str, comment: str | None = None,
                      message_id: str | None = None, session_id: str | None = None) -> Published:
        return await self.send(self.messages.approval(instance_id, True, approver, comment, message_id=message_id,
                                                      session_id=session_id))

    async def reject(self, instance_id: str, *, approver: str, comment: str | None = None,
                     message_id: str | None = None, session_id: str | None = None) -> Published:
        return await self.send(self.messages.approval(instance_id, False, approver, comment, message_id=message_id,
                                                      session_id=session_id))

    async def raise_event(self, instance_id: str, name: str, data: Any, *, message_id: str | None = None,
                          session_id: str | None = None) -> Published:
        return await self.send(self.messages.event(instance_id, name, data, message_id=message_id,
                                                   session_id=session_id))

    async def send(self, outgoing: Outgoing) -> Published:
        if self._sender is None:
            self._sender = self._open_sender(self._client)
        if not self._traced:
            await self._sender.send_messages(outgoing.message)
            return self._published(outgoing, None)
        from sbworker.observability.tracing import trace_id_hex

        with self._span(outgoing.message) as span:
            await self._sender.send_messages(outgoing.message)
        return self._published(outgoing, trace_id_hex(span))

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        try:
            if sender is not None:
                await sender.close()
        finally:
            if self._owns_client:
                await self._client.close()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
