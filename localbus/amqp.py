"""The AMQP side of one client connection: links, transfers, dispositions, ``$cbs`` and ``$management``.

Proton's engine produces events; :class:`ConnectionHandler` turns them into broker calls and answers in the
shapes the azure-servicebus SDK expects (see docs/servicebus-amqp.md): echoed termini, lock tokens as delivery
tags, explicit delivery counts, outcome echoed back on settlement.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from proton import Array, Condition, Delivery, Endpoint, Link, Message, Terminus, symbol

from . import codec
from .auth import TokenAuthority, audience_path, scope_covers
from .broker import (
    DEAD_LETTER_QUEUE,
    SUBSCRIPTION,
    TOPIC,
    Broker,
    Entity,
    LockLost,
    MoveFailed,
    Record,
    Waiter,
    parse_transfer,
)
from .management import Management, as_text, storage_condition
from .properties import InvalidProperty, encode_properties
from .sessions import (
    SESSION_CANNOT_BE_LOCKED,
    SESSION_LOCK_LOST,
    TIMEOUT,
    Session,
    SessionCannotBeLocked,
    SessionRequired,
)
from .store import StorageError

log = logging.getLogger("localbus.amqp")

MAX_MESSAGE_SIZE = 256 * 1024  # Standard tier and the emulator: the SDK sizes batches from this
INCOMING_CREDIT = 500
# Replies a client has not taken (no credit on its reply link) are held in memory: bounded per link and per
# connection. Far above what any SDK leaves outstanding (one request at a time per management link).
MAX_UNREAD_REPLIES = 256
MAX_UNREAD_REPLY_BYTES = 8 * 1024 * 1024
MAX_UNREAD_REPLIES_PER_CONNECTION = 1024
MAX_UNREAD_REPLY_BYTES_PER_CONNECTION = 32 * 1024 * 1024
LOCK_LOST = symbol("com.microsoft:message-lock-lost")
DEAD_LETTER = "com.microsoft:dead-letter"
DEAD_LETTER_KEYS = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})
SESSION_FILTER = "com.microsoft:session-filter"
LOCKED_UNTIL_UTC = symbol("com.microsoft:locked-until-utc")
OPERATION_TIMEOUT = "com.microsoft:timeout"
# How long a receiver asking for the next available session waits when it gives no com.microsoft:timeout.
SESSION_WAIT = 60.0
TICKS_AT_EPOCH = 621_355_968_000_000_000  # .NET ticks (100 ns since 0001-01-01) of 1970-01-01
_RD_TAGS = itertools.count(1)


class TooLarge(Exception):
    """A transfer above the link's max-message-size (Service Bus refuses these too)."""


@dataclass
class ServerContext:
    """What every connection shares: the broker, token checks and management operations."""

    broker: Broker
    auth: TokenAuthority
    link_credit: int = INCOMING_CREDIT  # credit localbus grants each client sender (and tops up at half)
    management: Management = field(init=False)

    def __post_init__(self) -> None:
        self.management = Management(self.broker)


def address_path(address: str | None) -> str:
    """``amqps://host:port/q/$DeadLetterQueue`` → ``q/$DeadLetterQueue``; relative addresses pass through."""
    text = (address or "").strip()
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    return text.strip("/")


class LinkConsumer:
    """A server→client link reading from one entity (a receiver in the SDK), or from one session of it."""

    def __init__(self, link: Link, entity: Entity, peek_lock: bool, client: ConnectionHandler | None = None
                 ) -> None:
        self.link = link
        self.entity = entity
        self.peek_lock = peek_lock
        self.closed = False
        self.client = client
        self.session: Session | None = None  # the session it holds the lock of
        self.waiter: Waiter | None = None  # while it waits for the next available session
        self.waiting_until = 0.0
        self.wait_seconds = 0.0

    def session_lost(self, description: str) -> None:
        """Its session lock expired: detach the link, as Service Bus does (the SDKs raise SessionLockLost)."""
        self.closed = True
        if self.client is not None:
            self.client.detach(self.link, SESSION_LOCK_LOST, description)

    def credit(self) -> int:
        return 0 if self.closed else int(self.link.credit)

    def push(self, record: Record, token: uuid.UUID | None, wire: bytes) -> None:
        tag = token.bytes_le if token is not None else next(_RD_TAGS).to_bytes(16, "little")
        delivery = self.link.delivery(cast(str, tag))  # proton accepts bytes tags
        self.link.send(wire)
        self.link.advance()
        if token is None:
            delivery.settle()
        else:
            delivery.lb_token = token

    def idle(self) -> None:
        if not self.closed and self.link.drain_mode and self.link.credit > 0:
            self.link.drained()


class ConnectionHandler:
    """Handles the proton events of one connection."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.broker = ctx.broker
        self.grants: dict[str, float | None] = {}  # entity-path scope -> expiry (epoch s) of its latest token
        self.refusals: dict[str, str] = {}  # entity-path scope -> why its latest token was refused
        self.connection: Any = None
        self.opened = False  # the client's Open arrived (so SASL is done too)
        self.close_requested = False  # we closed the connection over abuse: the server drops the socket soon
        self.consumers: list[LinkConsumer] = []
        self.reply_links: dict[str, Link] = {}  # reply address or node → server sender link
        self.gone = False  # closed: sends still being routed are stored, but nobody is answered
        # The earliest end of a session receiver's wait (monotonic s), so that the server wakes to refuse it on
        # time; may be stale (the receiver got a session), which costs one early wake-up.
        self.next_wait_end: float | None = None
        # Set by the server: bytes of our output written to the socket when the input now being handled was read,
        # and where the output written so far ends (flows count as seen by the client once written).
        self.read_mark = 0
        self.output_position: Callable[[], int] = lambda: 0

    def dispatch(self, event: Any) -> None:
        method = getattr(self, event.type.method, None)
        if method is not None:
            method(event)

    # --- endpoints -----------------------------------------------------------------------------------------

    def on_connection_remote_open(self, event: Any) -> None:
        conn = event.connection
        self.connection = conn
        self.opened = True
        conn.container = "localbus"
        conn.open()

    def on_session_remote_open(self, event: Any) -> None:
        event.session.open()

    def on_connection_remote_close(self, event: Any) -> None:
        self.cleanup()
        event.connection.close()

    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    def on_link_remote_close(self, event: Any) -> None:
        self._forget_link(event.link)
        event.link.close()

    def on_link_remote_detach(self, event: Any) -> None:
        self._forget_link(event.link)
        event.link.detach()

    def on_transport_closed(self, event: Any) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Drop this connection's consumers; its locks stay until they expire, as in Service Bus."""
        self.gone = True
        for consumer in self.consumers:
            self._drop_consumer(consumer)
        self.consumers.clear()
        self.reply_links.clear()

    def _drop_consumer(self, consumer: LinkConsumer) -> None:
        """A receiving link is gone: it reads no more; a session it held is released (its messages are
        available again, delivery count unchanged, as when a Service Bus session receiver closes)."""
        consumer.closed = True
        if consumer in consumer.entity.consumers:
            consumer.entity.consumers.remove(consumer)
        if consumer.waiter is not None:
            self.broker.stop_waiting(consumer.entity, consumer.waiter)
            consumer.waiter = None
        if consumer.session is not None and consumer.session.holder is consumer:
            self.broker.release_session(consumer.session)

    def _forget_link(self, link: Link) -> None:
        for consumer in [c for c in self.consumers if c.link == link]:
            self.consumers.remove(consumer)
            self._drop_consumer(consumer)
        for key in [k for k, v in self.reply_links.items() if v == link]:
            del self.reply_links[key]

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        is_sender = link.is_sender  # server sends = client receives
        address = (link.remote_source if is_sender else link.remote_target).address
        path = address_path(address)
        lowered = path.lower()
        if lowered == "$cbs":
            link.lb_kind = "cbs"
            self._accept(link)
            if is_sender:
                self.reply_links["$cbs"] = link
            return
        is_mgmt = lowered.endswith("$management")
        entity_part = path[: -len("$management")].rstrip("/") if is_mgmt else path
        entity = self.broker.entity(entity_part)
        if entity is None:
            self._refuse(link, "amqp:not-found", f"The messaging entity '{entity_part}' could not be found.")
            return
        link_path = f"{entity.name}/$management" if is_mgmt else entity.name
        failure = self.broker.persistence.failure
        if failure is not None:  # nothing is served until the store can write again (see server.py)
            self._refuse(link, storage_condition(failure), f"{failure}; localbus is retrying every second.")
            return
        if not self._authorized(link_path):
            refused = [why for scope, why in self.refusals.items() if scope_covers(scope, link_path)]
            reason = (f"the token presented for it was refused: {refused[-1]}" if refused
                      else "no valid token on $cbs covers it")
            self._refuse(link, "amqp:unauthorized-access", f"Unauthorized access to '{link_path}': {reason}.")
            return
        link.lb_entity = entity
        link.lb_path = link_path
        if is_mgmt:
            link.lb_kind = "mgmt"
            self._accept(link)
            if is_sender:
                reply_to = link.remote_target.address
                if reply_to:
                    self.reply_links[reply_to] = link
                self.reply_links[lowered] = link
            return
        refusal = self._data_link_refusal(link, entity, is_sender)
        if refusal is not None:
            self._refuse(link, *refusal)
            return
        link.lb_kind = "data"
        if not is_sender:
            self._accept(link)
            return
        peek_lock = link.remote_snd_settle_mode != Link.SND_SETTLED
        consumer = LinkConsumer(link, entity, peek_lock, self)
        link.lb_consumer = consumer
        self.consumers.append(consumer)
        if entity.sessionful:
            self._accept_session(link, consumer, session_filter(link.remote_source)[1])
            return
        self._accept(link)
        entity.consumers.append(consumer)

    @staticmethod
    def _data_link_refusal(link: Link, entity: Entity, is_sender: bool) -> tuple[str, str] | None:
        """Why Service Bus would refuse this data link, as (condition, description); None to accept it."""
        if not is_sender:  # the client sends
            if entity.kind in (DEAD_LETTER_QUEUE, SUBSCRIPTION):
                return ("amqp:not-allowed", f"Cannot send to '{entity.name}': sending to a {entity.kind} is not "
                                            "allowed. Send to its queue or topic instead.")
            return None
        if entity.kind == TOPIC:
            return ("amqp:not-allowed", f"Cannot receive from topic '{entity.name}': receive from one of its "
                                        "subscriptions ('<topic>/Subscriptions/<name>').")
        sessionful_receiver = session_filter(link.remote_source)[0]
        if sessionful_receiver and not entity.sessionful:
            return ("amqp:not-allowed", f"A sessionful message receiver cannot be created on an entity that does not "
                                        f"require sessions ('{entity.name}'). Ensure RequiresSession is set to true "
                                        "when creating a Queue or Subscription to enable sessionful behavior.")
        if entity.sessionful and not sessionful_receiver:
            return ("amqp:not-allowed", f"It is not possible for an entity that requires sessions to create a "
                                        f"non-sessionful message receiver ('{entity.name}').")
        return None

    def _accept_session(self, link: Link, consumer: LinkConsumer, session_id: str | None) -> None:
        """Lock the named session, or the next available one, for this receiver and answer its attach; with no
        session available, the attach waits (as Service Bus holds it) until one is, or the receiver's timeout."""
        try:
            session = self.broker.accept_session(consumer.entity, session_id, consumer)
        except SessionCannotBeLocked as exc:
            self._refuse(link, SESSION_CANNOT_BE_LOCKED, str(exc))
            return
        if session is not None:
            self._open_session_link(link, consumer, session)
            return
        timeout_ms = _lookup(link.remote_properties or {}, OPERATION_TIMEOUT)
        wait = int(timeout_ms) / 1000 if isinstance(timeout_ms, int) and timeout_ms > 0 else SESSION_WAIT
        consumer.waiting_until = time.monotonic() + wait
        consumer.wait_seconds = wait
        if self.next_wait_end is None or consumer.waiting_until < self.next_wait_end:
            self.next_wait_end = consumer.waiting_until
        consumer.waiter = Waiter(consumer, lambda found: self._open_session_link(link, consumer, found))
        self.broker.wait_for_session(consumer.entity, consumer.waiter)

    def _open_session_link(self, link: Link, consumer: LinkConsumer, session: Session) -> None:
        """Answer a session receiver's attach: the source's session filter names the session it got, and the
        link property com.microsoft:locked-until-utc says until when (in .NET ticks), as Service Bus answers."""
        consumer.waiter = None
        consumer.session = session
        link.properties = {LOCKED_UNTIL_UTC: TICKS_AT_EPOCH + session.locked_until_ms * 10_000}
        self._accept(link, session_id=session.session_id)

    def check_waiting(self) -> None:
        """Refuse the receivers whose wait for the next available session is over (com.microsoft:timeout)."""
        now = time.monotonic()
        for consumer in [c for c in self.consumers if c.waiter is not None and c.waiting_until <= now]:
            self.consumers.remove(consumer)
            self._drop_consumer(consumer)
            self._refuse(consumer.link, TIMEOUT, f"The operation did not complete within the allotted timeout of "
                                                 f"{consumer.wait_seconds:g} s: no session of "
                                                 f"'{consumer.entity.name}' was available.")
        self.next_wait_end = min((c.waiting_until for c in self.consumers if c.waiter is not None), default=None)

    def detach(self, link: Link, condition: str, description: str) -> None:
        """Detach one link with an error (the rest of the connection goes on)."""
        if link.state & Endpoint.LOCAL_CLOSED:
            return
        self._forget_link(link)
        link.condition = error(condition, description)
        link.close()

    def _accept(self, link: Link, session_id: str | None = None) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        if session_id is not None:
            link.source.filter.clear()
            link.source.filter.put_dict({symbol(SESSION_FILTER): session_id})
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.max_message_size = MAX_MESSAGE_SIZE
        link.open()
        if link.is_receiver:  # proton does not enforce credit for us: count it (see _within_credit)
            link.lb_granted = link.lb_received = link.lb_visible = link.lb_pending = 0
            link.lb_grants = collections.deque()  # (output position, total credit granted) of flows not yet seen
            self._grant(link, self.ctx.link_credit)

    @staticmethod
    def _refuse(link: Link, condition: str, description: str) -> None:
        log.info("refusing link to %s: %s", link.name, description)
        link.source.type = Terminus.UNSPECIFIED  # encoded as null: the SDK's sign that the attach was refused
        link.target.type = Terminus.UNSPECIFIED
        link.open()
        link.condition = error(condition, description)
        link.close()

    # --- authorisation ---------------------------------------------------------------------------------------

    def _authorized(self, path: str) -> bool:
        """Whether an unexpired token on this connection covers ``path`` (a link's entity path)."""
        now = self.ctx.auth.clock()
        return any(scope_covers(scope, path) and (expires is None or expires > now)
                   for scope, expires in self.grants.items())

    def _detach_unauthorized(self, link: Link) -> None:
        if link.state & Endpoint.LOCAL_CLOSED:
            return
        path = getattr_safe(link, "lb_path") or "?"
        log.info("detaching %s: its token expired", path)
        self._forget_link(link)
        link.condition = error("amqp:unauthorized-access",
                               f"The token for '{path}' has expired; put a new token on $cbs before it expires "
                               "to keep a link open.")
        link.close()

    def check_tokens(self) -> None:
        """Detach every entity link whose token has expired and was not renewed by a newer put-token."""
        if self.connection is None:
            return
        link = self.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            nxt = link.next(Endpoint.LOCAL_ACTIVE)
            path = getattr_safe(link, "lb_path")
            if path is not None and not self._authorized(path):
                self._detach_unauthorized(link)
            link = nxt

    def on_link_flow(self, event: Any) -> None:
        link = event.link
        if link.is_sender and getattr_safe(link, "lb_kind") == "data":
            consumer = getattr_safe(link, "lb_consumer")
            if consumer is not None and consumer.session is not None:
                self.broker.dirty_sessions.add(consumer.session)
            else:
                self.broker.dirty.add(link.lb_entity)

    # --- transfers -----------------------------------------------------------------------------------------

    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        link = delivery.link
        if link.is_receiver:
            self._incoming(link, delivery)
        else:
            self._settlement(link, delivery)

    def _incoming(self, link: Link, delivery: Delivery) -> None:
        if not delivery.aborted and (not delivery.readable or delivery.partial):
            return
        if link.state & Endpoint.LOCAL_CLOSED:
            delivery.settle()  # arrived after we detached the link: never stored
            return
        if not self._within_credit(link):
            delivery.settle()
            return
        if delivery.aborted:
            delivery.settle()
            return
        data = link.recv(delivery.pending)
        link.advance()
        raw = bytes(data) if data is not None else b""
        kind = getattr_safe(link, "lb_kind")
        if kind in ("data", "mgmt") and not self._authorized(link.lb_path):
            condition = error("amqp:unauthorized-access", f"The token for '{link.lb_path}' has expired.")
            delivery.local.condition = condition
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            self._detach_unauthorized(link)
            return
        link.lb_pending += 1

        def finish(outcome: Exception | None) -> None:
            link.lb_pending -= 1
            if self.gone:  # the connection closed while the send was routed: nobody to answer
                return
            self._settle_incoming(link, delivery, outcome)
            self._top_up(link)
        try:
            if kind == "data":
                if len(raw) > MAX_MESSAGE_SIZE:
                    raise TooLarge(f"The message ({len(raw)} bytes) exceeds the limit of {MAX_MESSAGE_SIZE} bytes.")
                self.broker.submit(link.lb_entity, [(msg, None) for msg in parse_transfer(raw)],
                                   lambda outcome: finish(outcome if isinstance(outcome, Exception) else None))
                return
            if kind == "cbs":
                self._put_token(raw)
            elif kind == "mgmt":
                self._management(link.lb_entity, raw)
        except Exception as exc:
            finish(exc)
            return
        finish(None)

    @staticmethod
    def _settle_incoming(link: Link, delivery: Delivery, failure: Exception | None) -> None:
        """Answer a transfer: accepted, or rejected with the condition Service Bus would use for the failure."""
        if failure is None:
            delivery.update(Delivery.ACCEPTED)
        else:
            if isinstance(failure, TooLarge):
                condition = Condition("amqp:link:message-size-exceeded", str(failure),
                                      {symbol("max-message-size"): MAX_MESSAGE_SIZE})
            elif isinstance(failure, codec.DecodeError):
                log.info("rejecting malformed message on %s: %s", link.name, failure)
                condition = error("amqp:decode-error", str(failure))  # the SDK indexes info: always send one
            elif isinstance(failure, InvalidProperty):
                log.info("rejecting message on %s: %s", link.name, failure)
                condition = error("amqp:invalid-field", str(failure))
            elif isinstance(failure, StorageError):
                condition = error(storage_condition(failure), str(failure))
            elif isinstance(failure, SessionRequired):
                condition = error("amqp:not-allowed", str(failure))
            else:  # a bug must cost this transfer, not the connection or the loop
                log.error("rejecting a transfer on %s after an internal error", link.name, exc_info=failure)
                condition = error("amqp:internal-error", f"internal error: {type(failure).__name__}")
            delivery.local.condition = condition
            delivery.update(Delivery.REJECTED)
        delivery.settle()

    def _top_up(self, link: Link) -> None:
        """Grant more credit once less than half is left. Transfers read but not handled yet, and sends still
        being routed, count as used: so a client never has more than the full credit outstanding."""
        if link.state & Endpoint.LOCAL_CLOSED:
            return
        full = self.ctx.link_credit
        outstanding = link.credit + link.queued + link.lb_pending
        if link.credit < (full + 1) // 2 and outstanding < full:
            self._grant(link, full - outstanding)

    def _grant(self, link: Link, credit: int) -> None:
        """Send a flow of ``credit`` and remember where in our output it ends (see :meth:`_within_credit`)."""
        link.flow(credit)
        link.lb_granted += credit
        link.lb_grants.append((self.output_position(), link.lb_granted))

    def _within_credit(self, link: Link) -> bool:
        """Count a transfer; past the credit the client could have seen, detach the link (transfer-limit-exceeded).

        The client can only have seen the flows we had written to the socket before we read its transfer
        (``read_mark``): credit granted while we worked through a backlog it sent without waiting does not
        excuse that backlog."""
        grants = getattr_safe(link, "lb_grants")
        if grants is None:
            return True
        link.lb_received += 1
        while grants and grants[0][0] <= self.read_mark:
            link.lb_visible = grants.popleft()[1]
        if link.lb_received <= link.lb_visible:
            return True
        log.info("detaching %s: transfer %d beyond the %d credit granted", link.name, link.lb_received,
                 link.lb_visible)
        self._forget_link(link)
        link.condition = error("amqp:link:transfer-limit-exceeded",
                               f"Transfer {link.lb_received} exceeds the link credit of {link.lb_visible}.")
        link.close()
        return False

    def _settlement(self, link: Link, delivery: Delivery) -> None:
        state = delivery.remote_state
        token = getattr_safe(delivery, "lb_token")
        if token is None:
            if delivery.settled:
                delivery.settle()  # a reply or a pre-settled message: nothing to decide
            return
        if not self._authorized(getattr_safe(link, "lb_path") or ""):
            self._detach_unauthorized(link)  # the lock stays until it expires, as after a disconnect
            return
        if state not in (Delivery.ACCEPTED, Delivery.MODIFIED, Delivery.REJECTED, Delivery.RELEASED):
            if delivery.settled:  # settled without an outcome: treat as released
                self._apply(token, Delivery.RELEASED, delivery)
                delivery.settle()
            return
        delivery.lb_token = None
        try:
            self._apply(token, state, delivery)
        except LockLost as exc:
            consumer = getattr_safe(link, "lb_consumer")
            lost = SESSION_LOCK_LOST if consumer is not None and consumer.session is not None else LOCK_LOST
            delivery.local.condition = error(lost, str(exc))
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        except InvalidProperty as exc:  # propertiesToModify Service Bus would not store: nothing changed
            delivery.local.condition = error("amqp:invalid-field", str(exc))
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        except StorageError as exc:  # the server drops this answer with the connection and reloads the store
            delivery.local.condition = error(storage_condition(exc), str(exc))
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        except MoveFailed as exc:  # the message keeps its place and its lock; the client learns why
            delivery.local.condition = error("amqp:internal-error", str(exc))
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        if state == Delivery.MODIFIED:
            delivery.local.failed = delivery.remote.failed
            delivery.local.undeliverable = delivery.remote.undeliverable
        delivery.update(state)
        delivery.settle()

    def _apply(self, token: uuid.UUID, state: Any, delivery: Delivery) -> None:
        broker = self.broker
        if state == Delivery.ACCEPTED:
            broker.complete(token)
        elif state == Delivery.RELEASED:
            broker.release(token)
        elif state == Delivery.MODIFIED:
            # Service Bus: undeliverable-here is a defer; any other modified outcome is an abandon, counted
            # whether or not delivery-failed is set (the JavaScript and .NET SDKs leave it unset). The
            # outcome's message-annotations are the client's propertiesToModify.
            modify = encode_properties(_copy(delivery.remote.annotations))
            if delivery.remote.undeliverable:
                broker.defer(token, modify)
            else:
                broker.abandon(token, modify)
        elif state == Delivery.REJECTED:
            condition = delivery.remote.condition
            info = (condition.info if condition is not None else None) or {}
            modify = encode_properties(_copy({str(k): v for k, v in info.items()}) if isinstance(info, dict)
                                       else None, skip=DEAD_LETTER_KEYS)
            reason = as_text(_lookup(info, "DeadLetterReason"))
            description = as_text(_lookup(info, "DeadLetterErrorDescription"))
            if reason is None and condition is not None and str(condition.name) != DEAD_LETTER:
                reason = str(condition.name)
            if description is None and condition is not None and condition.description:
                description = str(condition.description)
            broker.dead_letter(token, reason, description, modify)

    # --- $cbs and $management ----------------------------------------------------------------------------

    def _reply(self, key: str | None, fallback: str, message: Message) -> None:
        link = self.reply_links.get(key or "") or self.reply_links.get(fallback)
        if link is None:
            log.debug("no reply link for %s; dropping the response", key or fallback)
            return
        try:
            payload = message.encode()
        except Exception:
            log.exception("cannot encode a reply on %s; dropping it", link.name)
            return
        if not self._room_for_reply(link, len(payload)):
            return
        delivery = link.delivery(cast(str, next(_RD_TAGS).to_bytes(8, "little")))
        link.send(payload)
        link.advance()
        link.lb_unread.append(len(payload))
        if link.snd_settle_mode == Link.SND_SETTLED:
            delivery.settle()

    @staticmethod
    def _unread(link: Link) -> collections.deque[int]:
        """Sizes of the replies on ``link`` not yet sent (no credit): proton sends them in order."""
        sizes: collections.deque[int] | None = getattr_safe(link, "lb_unread")
        if sizes is None:
            sizes = link.lb_unread = collections.deque()
        while len(sizes) > link.queued:
            sizes.popleft()
        return sizes

    def _room_for_reply(self, link: Link, size: int) -> bool:
        """Whether one more reply fits the unread-reply limits; if not, close the connection (resource limit)."""
        sizes = self._unread(link)
        links = {id(v): v for v in self.reply_links.values()}.values()
        all_sizes = [self._unread(other) for other in links]
        if (len(sizes) < MAX_UNREAD_REPLIES and sum(sizes) + size <= MAX_UNREAD_REPLY_BYTES
                and sum(map(len, all_sizes)) < MAX_UNREAD_REPLIES_PER_CONNECTION
                and sum(map(sum, all_sizes)) + size <= MAX_UNREAD_REPLY_BYTES_PER_CONNECTION):
            return True
        log.warning("closing a connection that left %d replies unread on %s", len(sizes), link.name)
        self.close_connection("amqp:resource-limit-exceeded",
                              f"Too many unread replies on '{link.name}' (at most {MAX_UNREAD_REPLIES} replies or "
                              f"{MAX_UNREAD_REPLY_BYTES // (1024 * 1024)} MiB per link): grant credit to read them.")
        return False

    def close_connection(self, condition: str, description: str) -> None:
        """Close the whole connection with an error; the server drops the socket if the client lingers."""
        if self.connection is None or self.close_requested:
            return
        self.close_requested = True
        self.cleanup()
        self.connection.condition = error(condition, description)
        self.connection.close()

    def _put_token(self, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        props: dict[Any, Any] = request.properties or {}
        token_type = str(props.get("type", ""))
        audience = str(props.get("name", ""))
        body = request.body
        token = bytes(body).decode("utf-8", "replace") if isinstance(body, bytes | memoryview) else str(body)
        result = self.ctx.auth.put_token(token_type, audience, token, props.get("expiration"))
        if result.ok:
            self.grants[result.scope] = result.expires_at  # a renewal replaces the earlier expiry
            self.refusals.pop(result.scope, None)
        else:
            log.info("refused %s token for %s: %s", token_type, audience, result.description)
            # A client that attaches anyway (without waiting for this reply) learns why from the detach too.
            self.refusals.pop(audience_path(audience), None)
            self.refusals[audience_path(audience)] = result.description[:512]
            while len(self.refusals) > 64:
                del self.refusals[next(iter(self.refusals))]
        reply = Message(correlation_id=request.id,
                        properties={"status-code": result.status, "status-description": result.description})
        self._reply(request.reply_to, "$cbs", reply)

    def _management(self, entity: Entity, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        request.body = _copy(request.body)
        self.ctx.management.handle(entity, request,
                                   lambda reply: self._reply(request.reply_to, f"{entity.key}/$management", reply),
                                   client=self)


def error(condition: str | symbol, description: str, info: dict[Any, Any] | None = None) -> Condition:
    """An AMQP error that always carries its info map: the Python SDK indexes it and, if it is absent, crashes
    with IndexError while handling a close (``_incoming_close``) instead of reporting the error."""
    return Condition(condition, description, info if info else {symbol("detail"): description})


def session_filter(terminus: Terminus) -> tuple[bool, str | None]:
    """(whether the source carries ``com.microsoft:session-filter``, the session it names: None for the next
    available one). A session receiver always sends the filter, with a null value for next-available."""
    data = terminus.filter
    data.rewind()
    if data.next() is None:
        return False, None
    try:
        value = data.get_object()
    except Exception:  # an undecodable filter set: no filter we act on
        return False, None
    if not isinstance(value, dict):
        return False, None
    for key, session_id in value.items():
        if str(key) == SESSION_FILTER:
            named = as_text(session_id.value if hasattr(session_id, "descriptor") else session_id)
            return True, named
    return False, None


def getattr_safe(obj: Any, name: str) -> Any:
    """Proton wrappers raise AttributeError for unset attributes; read them as None."""
    try:
        return getattr(obj, name)
    except AttributeError:
        return None


def _lookup(info: Any, key: str) -> Any:
    if not isinstance(info, dict):
        return None
    for k, v in info.items():
        if str(k) == key:
            return v
    return None


def _copy(value: Any) -> Any:
    """Detach values decoded by proton from its buffers (memoryviews can be freed under us)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return {_copy(k): _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    if isinstance(value, Array):
        return Array(value.descriptor, value.type, *[_copy(v) for v in value.elements])
    return value
