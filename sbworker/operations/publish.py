"""Building the messages of the contract (start, approval, event), plain or as CloudEvents, checked by the listener's
own parser before anything is sent. What `sbworker publish`, the dashboard and `Publisher` send.

Every message is built, then read back by `contract.parse` with the registry, the declared events and the bounds,
exactly as the listener will read it: a message it would dead-letter is refused here with the same reason
(`Rejected.reason`) and description, and nothing is sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from orchestrations import registry
from orchestrations.events import CATALOG
from sbworker.core import cloudevents, contract
from sbworker.core.codes import CLOUDEVENT_TYPES
from sbworker.core.contract import Invalid, Rejected, Request
from sbworker.core.entities import MAX_SESSION_ID, Source
from sbworker.core.events import EventCatalog
from sbworker.core.limits import DEFAULT_LIMITS, Limits

CONTENT_TYPE: Final = "application/json"
#: The CloudEvents `source` of what sbworker's own tools publish, unless the caller names its own.
DEFAULT_SOURCE: Final = "urn:sbworker:publisher"
_TYPES: Final = {subject: event_type for event_type, subject in CLOUDEVENT_TYPES.items()}


@dataclass(frozen=True)
class Outgoing:
    """A message ready to send, what the listener will make of it, and the instance it is for."""

    message: ServiceBusMessage
    request: Request
    instance_id: str

    @property
    def message_id(self) -> str:
        return str(self.message.message_id)

    @property
    def event_id(self) -> str | None:
        """The CloudEvents id, when sent as a CloudEvent (the idempotency key, as the message id is otherwise)."""
        return self.request.cloudevent.id if self.request.cloudevent is not None else None


class Messages:
    """Builds contract messages in one form: plain (`cloudevents=None`), or a CloudEvent in either content mode.

    With `sessions` (the queue or subscription requires them, SERVICEBUS_SESSIONS), every message is in a session:
    the one `session_id` names, by default its instance's id, so that an instance's messages are handled in the
    order they were sent (an approval never overtakes its start). A key of your own, such as a customer id, makes
    all of that customer's workflows one ordered stream."""

    def __init__(self, *, cloudevents: cloudevents.Mode | None = None, source: str = DEFAULT_SOURCE,
                 bounds: Limits = DEFAULT_LIMITS, events: EventCatalog = CATALOG, sessions: bool = False) -> None:
        self._mode = cloudevents
        self._source = source
        self._bounds = bounds
        self._events = events
        self.sessions = sessions

    def start(self, orchestration: str, input: Any = None, *, instance_id: str | None = None,
              start_at: datetime | None = None, message_id: str | None = None, session_id: str | None = None
              ) -> Outgoing:
        """Start `orchestration`; the instance id defaults to the message id (the event id for a CloudEvent)."""
        body = contract.start_body(orchestration, input=input, instance_id=instance_id, start_at=start_at,
                                   bounds=self._bounds, input_problem=registry.input_problem)
        return self._build(contract.SUBJECT_START, body, message_id, instance_id, session_id)

    def approval(self, instance_id: str, approved: bool, approver: str, comment: str | None = None, *,
                 message_id: str | None = None, session_id: str | None = None) -> Outgoing:
        body = contract.approval_body(instance_id, approved, approver, comment, bounds=self._bounds)
        return self._build(contract.SUBJECT_APPROVAL, body, message_id, instance_id, session_id)

    def event(self, instance_id: str, name: str, data: Any, *, message_id: str | None = None,
              session_id: str | None = None) -> Outgoing:
        """Raise the declared event `name` (orchestrations/events.py) with `data` on `instance_id`."""
        body = contract.event_body(instance_id, name, data, self._events, bounds=self._bounds)
        return self._build(contract.SUBJECT_EVENT, body, message_id, instance_id, session_id)

    def _build(self, subject: str, body: dict[str, Any], message_id: str | None, instance_id: str | None,
               session_id: str | None) -> Outgoing:
        mid = message_id or uuid.uuid4().hex
        if self._mode is None:
            raw, content_type, properties = json.dumps(body).encode(), CONTENT_TYPE, {}
        else:
            attributes = {"id": mid, "source": self._source, "type": _TYPES[subject],
                          "time": datetime.now(UTC), **({"subject": instance_id} if instance_id else {})}
            written = cloudevents.write(self._mode, attributes, body)
            raw, content_type, properties = written.body, written.content_type, written.properties
        request = verify(raw, subject=subject, content_type=content_type, message_id=mid, properties=properties,
                         bounds=self._bounds, events=self._events)
        # The subject is kept for a CloudEvent too: Service Bus tools show it, the listener ignores it.
        message = ServiceBusMessage(raw, subject=subject, content_type=content_type, message_id=mid,
                                    session_id=session_of(request.instance_id, session_id, self.sessions))
        if properties:  # a datetime (cloudEvents_time) is sent as an AMQP timestamp, beyond the annotated types
            message.application_properties = {str(key): value for key, value in properties.items()}
        return Outgoing(message, request, request.instance_id)


def session_of(instance_id: str, session_id: str | None, sessions: bool) -> str | None:
    """The session a message goes in: the one named, else the instance's own when sessions are on, else none.
    A ``ValueError`` for what Service Bus refuses."""
    chosen = session_id if session_id is not None else instance_id if sessions else None
    if chosen is not None and not 0 < len(chosen) <= MAX_SESSION_ID:
        raise ValueError(f"a session id is 1 to {MAX_SESSION_ID} characters (Service Bus), got {len(chosen)}")
    return chosen


def verify(body: bytes, *, subject: str | None, content_type: str | None, message_id: str,
           properties: Mapping[Any, Any] | None = None, bounds: Limits = DEFAULT_LIMITS,
           events: EventCatalog = CATALOG) -> Request:
    """What the listener makes of this message; `Rejected` (its dead-letter reason and description) otherwise."""
    parsed = contract.parse(body, subject=subject, content_type=content_type, message_id=message_id,
                            is_registered=registry.is_startable, registered_names=registry.orchestration_names,
                            events=events, bounds=bounds, input_problem=registry.input_problem,
                            application_properties=properties)
    if isinstance(parsed, Invalid):
        raise Rejected(parsed.reason, parsed.description)
    return parsed


def start_message(orchestration: str, input: Any = None, instance_id: str | None = None,
                  start_at: datetime | None = None, message_id: str | None = None, *, bounds: Limits = DEFAULT_LIMITS
                  ) -> tuple[ServiceBusMessage, str]:
    """A plain start message and the instance id it will create; `Rejected` (a ``ValueError``) for what the
    listener would dead-letter."""
    outgoing = Messages(bounds=bounds).start(orchestration, input, instance_id=instance_id, start_at=start_at,
                                             message_id=message_id)
    return outgoing.message, outgoing.instance_id


def approval_message(instance_id: str, approved: bool, approver: str, comment: str | None = None,
                     message_id: str | None = None, *, bounds: Limits = DEFAULT_LIMITS) -> ServiceBusMessage:
    return Messages(bounds=bounds).approval(instance_id, approved, approver, comment, message_id=message_id).message


def event_message(instance_id: str, name: str, data: Any, message_id: str | None = None, *,
                  bounds: Limits = DEFAULT_LIMITS) -> ServiceBusMessage:
    return Messages(bounds=bounds).event(instance_id, name, data, message_id=message_id).message


def send(client: ServiceBusClient, source: Source, message: ServiceBusMessage, *, traced: bool = False
         ) -> str | None:
    """Send `message` to the queue or topic; with `traced`, inside a PRODUCER span whose context the message
    carries (`traceparent`).

    Returns the trace id (32 hex digits) when traced, so the caller can print it.
    """
    if not traced:
        with source.sender(client) as sender:
            sender.send_messages(message)
        return None
    from sbworker.observability import tracing

    with tracing.producer_span(source.publish_to, message) as span, source.sender(client) as sender:
        sender.send_messages(message)
    return tracing.trace_id_hex(span)
