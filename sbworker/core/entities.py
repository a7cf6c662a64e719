"""Service Bus entities by name: a queue, or a subscription of a topic, and how to open a link to each.

The service reads one *source*: a queue (SERVICEBUS_QUEUE), or a topic subscription (SERVICEBUS_TOPIC +
SERVICEBUS_SUBSCRIPTION). On a topic, an early approval cannot be re-enqueued where it came from: a copy sent to
the topic would reach every subscription again. So the topic form adds a retry queue that only this worker
reads (SERVICEBUS_RETRY_QUEUE); the listener receives from the subscription and from that queue. With
SERVICEBUS_SESSIONS every entity the source reads requires sessions, its retry queue too.
Both the sync and the asyncio `ServiceBusClient` have the same `get_*_receiver` / `get_*_sender` methods, so
one set of helpers serves the CLI and the listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Service Bus entity names: at most 260 characters for a queue or topic path, 50 for a subscription.
MAX_PATH = 260
MAX_SUBSCRIPTION = 50
#: Service Bus's longest session id (its quotas; an instance id, at most 100 characters, always fits).
MAX_SESSION_ID: Final = 128
_FORBIDDEN = " \t\r\n?#"


@dataclass(frozen=True)
class Entity:
    """One entity to receive from: a queue (`topic` None) or the subscription `name` of `topic`."""

    name: str
    topic: str | None = None

    @property
    def is_subscription(self) -> bool:
        return self.topic is not None

    @property
    def path(self) -> str:
        """The AMQP address, as Service Bus (and localbus) name it."""
        return f"{self.topic}/Subscriptions/{self.name}" if self.topic else self.name

    def __str__(self) -> str:
        return f"subscription {self.name!r} of topic {self.topic!r}" if self.topic else f"queue {self.name!r}"

    def receiver(self, client: Any, **options: Any) -> Any:
        """A receiver on this entity (options as for the SDK's `get_queue_receiver`, e.g. sub_queue)."""
        if self.topic is not None:
            return client.get_subscription_receiver(self.topic, self.name, **options)
        return client.get_queue_receiver(self.name, **options)


@dataclass(frozen=True)
class Source:
    """What the service reads, where publishers send, and where early approvals wait for their instance."""

    entity: Entity  # the queue, or the subscription
    retry_queue: str  # the queue itself, or the topic form's own retry queue
    sessions: bool = False  # every entity read requires sessions (SERVICEBUS_SESSIONS)

    @property
    def topic(self) -> str | None:
        return self.entity.topic

    @property
    def publish_to(self) -> str:
        """Where start and approval messages are sent: the queue, or the topic."""
        return self.entity.topic or self.entity.name

    @property
    def receive_from(self) -> tuple[Entity, ...]:
        """Every entity the listener reads: the queue; or the subscription and the retry queue."""
        if self.entity.topic is None:
            return (self.entity,)
        return (self.entity, Entity(self.retry_queue))

    def __str__(self) -> str:
        sessions = ", sessions" if self.sessions else ""
        if self.entity.topic is None:
            return f"{self.entity}{sessions}"
        return f"{self.entity} (retries via queue {self.retry_queue!r}{sessions})"

    def setting_for(self, entity: Entity) -> str:
        """The environment variable(s) that name `entity`, for an error line."""
        if entity.topic is not None:
            return "SERVICEBUS_TOPIC / SERVICEBUS_SUBSCRIPTION"
        return "SERVICEBUS_RETRY_QUEUE" if self.entity.topic is not None else "SERVICEBUS_QUEUE"

    def sender(self, client: Any) -> Any:
        """A sender to the queue or the topic: what the CLI and the dashboard publish with."""
        if self.entity.topic is not None:
            return client.get_topic_sender(self.entity.topic)
        return client.get_queue_sender(self.entity.name)

    def retry_sender(self, client: Any) -> Any:
        """A sender to the retry queue: re-enqueued approvals and dead-letter resubmits, seen by this worker only."""
        return client.get_queue_sender(self.retry_queue)


def queue_source(queue: str, *, sessions: bool = False) -> Source:
    return Source(Entity(queue), retry_queue=queue, sessions=sessions)


def topic_source(topic: str, subscription: str, retry_queue: str | None = None, *, sessions: bool = False) -> Source:
    retry = retry_queue or default_retry_queue(topic, subscription)
    return Source(Entity(subscription, topic=topic), retry_queue=retry, sessions=sessions)


def default_retry_queue(topic: str, subscription: str) -> str:
    return f"{topic}-{subscription}-retry"


def name_problem(name: str, *, longest: int = MAX_PATH) -> str | None:
    """Why `name` cannot be an entity name, or None."""
    if not name:
        return "empty"
    if len(name) > longest:
        return f"longer than {longest} characters"
    if any(c in name for c in _FORBIDDEN):
        return "contains a space, '?' or '#'"
    return None
