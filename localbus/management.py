"""``$management`` request/response operations (renew-lock, schedule, peek, deferred receive, dispositions).

Requests and replies are small AMQP maps, so they go through proton's :class:`Message`; message payloads inside
them are the broker's raw encoded messages. Replies carry ``statusCode``/``statusDescription`` (and
``errorCondition`` on failure) as the SDK's management link expects.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, cast

from proton import UNDESCRIBED, Array, Data, Message, timestamp

from . import codec
from .broker import Broker, Entity, LockLost, MessageNotFound, MoveFailed, parse_incoming
from .properties import InvalidProperty, encode_properties
from .sessions import MAX_SESSION_STATE_BYTES, SESSION_LOCK_LOST, SessionLockLost, SessionRequired
from .store import StorageError

log = logging.getLogger("localbus.management")

_UNDESCRIBED = cast(Any, UNDESCRIBED)
LOCK_LOST = "com.microsoft:message-lock-lost"
NOT_FOUND = "com.microsoft:message-not-found"
ARGUMENT_ERROR = "com.microsoft:argument-error"
# A peek reply holds at most this much message data (always at least one message): the client chooses
# message-count, and an unbounded reply would let one request pin the whole queue in memory a second time.
MAX_PEEK_REPLY_BYTES = 4 * 1024 * 1024


def storage_condition(failure: StorageError) -> str:
    """What Service Bus answers in its place: a full entity is quota exceeded (the SDK raises
    ServiceBusQuotaExceededError), a store that cannot write is server busy (ServiceBusServerBusyError, retried)."""
    return "amqp:resource-limit-exceeded" if failure.full else "com.microsoft:server-busy"


class OperationError(Exception):
    """A management request that fails with a status code and an error condition."""

    def __init__(self, status: int, condition: str, description: str) -> None:
        super().__init__(description)
        self.status, self.condition, self.description = status, condition, description


def _items(value: Any) -> list[Any]:
    """AMQP arrays decode as :class:`proton.Array`; lists as lists. Normalise to a list."""
    if value is None:
        return []
    if isinstance(value, Array):
        return list(value.elements)
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(bytes(value).decode() if isinstance(value, bytes | memoryview) else str(value))
    except ValueError:
        raise OperationError(400, ARGUMENT_ERROR, f"not a lock token: {value!r}") from None


def _get(body: dict[Any, Any], key: str) -> Any:
    for k, v in body.items():
        if str(k) == key:
            return v
    return None


Reply = tuple[int, dict[str, Any] | None]  # status code and body of a successful operation


def as_text(value: Any) -> str | None:
    """A decoded AMQP value as text (strings may arrive as bytes, and proton hands out memoryviews)."""
    if value is None:
        return None
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _long_array(values: list[int]) -> Array:
    return Array(_UNDESCRIBED, Data.LONG, *values)


class Management:
    """Runs one management request against the broker for the entity the link was attached to."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._ops: dict[str, Callable[[Entity, dict[Any, Any], object], Reply]] = {
            "com.microsoft:renew-lock": self._renew_lock,
            "com.microsoft:renew-session-lock": self._renew_session_lock,
            "com.microsoft:get-session-state": self._get_session_state,
            "com.microsoft:set-session-state": self._set_session_state,
            "com.microsoft:cancel-scheduled-message": self._cancel,
            "com.microsoft:peek-message": self._peek,
            "com.microsoft:receive-by-sequence-number": self._receive_deferred,
            "com.microsoft:update-disposition": self._update_disposition,
        }

    def handle(self, entity: Entity, request: Message, respond: Callable[[Message], None], client: object = None
               ) -> None:
        """Execute a request message and give ``respond`` the reply, at once or (a schedule on a topic whose
        rules are expensive) once the message is routed. Client errors become error replies, never exceptions.
        ``client`` is the connection it came on: session operations are for the session's holder only."""
        properties: dict[Any, Any] = request.properties or {}
        operation = str(properties.get("operation", ""))
        body = request.body if isinstance(request.body, dict) else {}

        def finish(outcome: Reply | Exception) -> None:
            respond(self._reply(request, operation, outcome))
        try:
            if operation == "com.microsoft:schedule-message":
                self._schedule(entity, body, finish)
                return
            op = self._ops.get(operation)
            if op is None:
                raise OperationError(501, "amqp:not-implemented", f"operation {operation!r} is not supported")
            outcome: Reply | Exception = op(entity, body, client)
        except Exception as exc:
            outcome = exc
        finish(outcome)

    @staticmethod
    def _reply(request: Message, operation: str, outcome: Reply | Exception) -> Message:
        reply_body: dict[str, Any] | None = None
        if not isinstance(outcome, Exception):
            status, reply_body = outcome
            props: dict[str, Any] = {"statusCode": status, "statusDescription": "OK" if status == 200 else ""}
        elif isinstance(outcome, OperationError):
            props = {"statusCode": outcome.status, "statusDescription": outcome.description,
                     "errorCondition": outcome.condition}
        elif isinstance(outcome, SessionLockLost):
            props = {"statusCode": 410, "statusDescription": str(outcome), "errorCondition": SESSION_LOCK_LOST}
        elif isinstance(outcome, SessionRequired):
            props = {"statusCode": 400, "statusDescription": str(outcome), "errorCondition": "amqp:not-allowed"}
        elif isinstance(outcome, LockLost | MessageNotFound):
            lost = isinstance(outcome, LockLost)
            props = {"statusCode": 410 if lost else 404, "statusDescription": str(outcome),
                     "errorCondition": LOCK_LOST if lost else NOT_FOUND}
        elif isinstance(outcome, codec.DecodeError):
            props = {"statusCode": 400, "statusDescription": f"malformed message: {outcome}",
                     "errorCondition": "amqp:decode-error"}
        elif isinstance(outcome, InvalidProperty):
            props = {"statusCode": 400, "statusDescription": str(outcome), "errorCondition": "amqp:invalid-field"}
        elif isinstance(outcome, StorageError):
            props = {"statusCode": 403 if outcome.full else 503, "statusDescription": str(outcome),
                     "errorCondition": storage_condition(outcome)}
        elif isinstance(outcome, MoveFailed):
            props = {"statusCode": 500, "statusDescription": str(outcome), "errorCondition": "amqp:internal-error"}
        else:  # a bad request must cost its sender an error reply, never the connection
            log.error("management operation %r failed", operation, exc_info=outcome)
            props = {"statusCode": 500, "statusDescription": f"{type(outcome).__name__}: {outcome}",
                     "errorCondition": "amqp:internal-error"}
        return Message(body=reply_body, correlation_id=request.id, properties=props)

    def _renew_lock(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        expirations = [timestamp(self.broker.renew(_uuid(t))) for t in _items(_get(body, "lock-tokens"))]
        return 200, {"expirations": Array(_UNDESCRIBED, Data.TIMESTAMP, *expirations)}

    def _renew_session_lock(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        until = self.broker.renew_session(entity, as_text(_get(body, "session-id")), client)
        return 200, {"expiration": timestamp(until)}

    def _get_session_state(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        state = self.broker.session_state(entity, as_text(_get(body, "session-id")), client)
        return 200, {"session-state": state}

    def _set_session_state(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        state = _get(body, "session-state")
        if state is not None and not isinstance(state, bytes | bytearray | memoryview):
            raise OperationError(400, ARGUMENT_ERROR, f"session-state must be binary, got {type(state).__name__}")
        state = None if state is None else bytes(state)
        if state is not None and len(state) > MAX_SESSION_STATE_BYTES:
            raise OperationError(400, ARGUMENT_ERROR, f"the session state is {len(state):,} bytes; it may hold at "
                                                      f"most {MAX_SESSION_STATE_BYTES:,} (the size of one message)")
        self.broker.set_session_state(entity, as_text(_get(body, "session-id")), state, client)
        return 200, {}

    def _schedule(self, entity: Entity, body: dict[Any, Any],
                  finish: Callable[[Reply | Exception], None]) -> None:
        parsed = []
        for item in _items(_get(body, "messages")):
            raw = _get(item, "message") if isinstance(item, dict) else None
            if raw is None:
                raise OperationError(400, ARGUMENT_ERROR, "schedule-message entry lacks 'message'")
            parsed.append(parse_incoming(bytes(raw)))

        def scheduled(outcome: list[int] | Exception) -> None:
            finish(outcome if isinstance(outcome, Exception) else (200, {"sequence-numbers": _long_array(outcome)}))
        self.broker.submit(entity, [(msg, msg.scheduled_ms) for msg in parsed], scheduled)

    def _cancel(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        self.broker.cancel_scheduled(entity, [int(s) for s in _items(_get(body, "sequence-numbers"))])
        return 200, {}

    def _peek(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        start = int(_get(body, "from-sequence-number") or 0)
        count = int(_get(body, "message-count") or 1)
        found = self.broker.peek(entity, start, count, max_bytes=MAX_PEEK_REPLY_BYTES,
                                 session_id=as_text(_get(body, "session-id")))
        if not found:
            return 204, None
        return 200, {"messages": [{"message": raw} for raw in found]}

    def _receive_deferred(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        seqs = [int(s) for s in _items(_get(body, "sequence-numbers"))]
        peek_lock = int(_get(body, "receiver-settle-mode") or 0) != 0
        taken = self.broker.receive_deferred(entity, seqs, peek_lock, as_text(_get(body, "session-id")), client)
        messages = []
        for token, raw in taken:
            entry: dict[str, Any] = {"message": raw}
            if token is not None:
                entry["lock-token"] = token
            messages.append(entry)
        return 200, {"messages": messages}

    def _update_disposition(self, entity: Entity, body: dict[Any, Any], client: object) -> Reply:
        status = str(_get(body, "disposition-status") or "")
        tokens = [_uuid(t) for t in _items(_get(body, "lock-tokens"))]
        reason = _get(body, "deadletter-reason")
        description = _get(body, "deadletter-description")
        modify = encode_properties(_get(body, "properties-to-modify"))
        for token in tokens:
            if status == "completed":
                self.broker.complete(token)
            elif status == "abandoned":
                self.broker.abandon(token, modify)
            elif status == "defered":
                self.broker.defer(token, modify)
            elif status == "suspended":
                self.broker.dead_letter(token, None if reason is None else str(reason),
                                        None if description is None else str(description), modify)
            else:
                raise OperationError(400, ARGUMENT_ERROR, f"unknown disposition-status {status!r}")
        return 200, {}
