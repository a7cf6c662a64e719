"""The listener: receive (peek-lock) → parse → dispatch → decide → settle, with bounded concurrency.

One Listener reads one entity: a queue, a topic subscription, or the topic form's retry queue
(sbworker/core/entities.py).

It survives connection loss (reconnects with backoff), and on stop it finishes in-flight messages within the
grace period, abandons what is left, and lets the SDK release what it prefetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
)

from listener.dispatch import Dispatcher, InstanceNotFound
from listener.locks import LockKeeper
from listener.settlement import Abandon, Action, Complete, DeadLetter, RetryHistory, RetryLater, decide
from sbworker import patches
from sbworker.core import contract, messages
from sbworker.core.codes import PROP_UNDECODABLE, AbandonReason, Reason
from sbworker.core.config import ListenerSettings
from sbworker.core.contract import ApprovalRequest, Invalid, StartRequest
from sbworker.core.entities import Entity, Source
from sbworker.core.errors import one_line
from sbworker.core.text import clip
from sbworker.observability.metrics import NOOP, Metrics

# sbworker.observability.tracing loads OpenTelemetry: imported only by telemetry.setup, when tracing is on.
if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from sbworker.observability.telemetry import Telemetry
    from sbworker.observability.tracing import MessageTracer

log = logging.getLogger(__name__)

# Keep a lock for at most this long while handling one message (transient retries are far shorter).
MAX_LOCK_RENEWAL_SECONDS = 600.0
# Longest message id, subject or instance id written into a log line.
LOG_FIELD_CHARS = 128
# A link with no sign of life (a message received or settled, a probe answered) for this long is probed; a probe
# unanswered for LIVENESS_TIMEOUT_SECONDS means it is half-open (detection within about 25 s).
LIVENESS_IDLE_SECONDS = 10.0
LIVENESS_TIMEOUT_SECONDS = 10.0
# How long one receive call waits for a message when the queue is idle: it bounds how late a stop is noticed.
RECEIVE_WAIT_SECONDS = 0.25
# How long a few free concurrency slots wait for more to free before a receive call fills them (see _receive_loop).
REFILL_WAIT_SECONDS = 0.005
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 30.0
AUTH_FAILURE_DELAY = 60.0
# A dead-letter description ends with the trace id when tracing is on: the DLQ entry can be found in the viewer.
MAX_DESCRIPTION_CHARS = 1024


@dataclass
class ListenerState:
    """What /readyz and tests look at."""

    connected: bool = False
    last_error: str | None = None


class Listener:
    """Receives from one entity until `stop` is set; never exits because of a broker or DTS failure.

    `entity` is one of `source.receive_from` (default: the queue or subscription). Early approvals are
    re-enqueued, as scheduled copies, to the source's retry queue: the queue itself, or in the topic form a queue
    only this worker reads (another Listener receives from it).
    """

    def __init__(
        self,
        *,
        client_factory: Callable[[], ServiceBusClient],
        source: Source,
        entity: Entity | None = None,
        dispatcher: Dispatcher,
        settings: ListenerSettings,
        is_registered: Callable[[str], bool],
        registered_names: Callable[[], list[str]],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._source = source
        self._entity = entity or source.entity
        self._dispatcher = dispatcher
        self._settings = settings
        self._is_registered = is_registered
        self._registered_names = registered_names
        self.state = ListenerState()
        self._up = asyncio.Event()  # set while connected: what Service.ready waits on
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._sender: ServiceBusSender | None = None
        # One shared sender for re-enqueues: the SDK does not guard a link's concurrent first use, so serialise.
        self._sender_lock = asyncio.Lock()
        self._last_alive = time.monotonic()  # see _receive_while_alive
        self._metrics: Metrics = telemetry.metrics if telemetry is not None else NOOP
        # None unless an exporter is configured: then no span object is ever built.
        self._tracer: MessageTracer | None = None
        if telemetry is not None and telemetry.tracer is not None:
            self._tracer = telemetry.tracer(self._entity.topic or self._entity.name,
                                            self._entity.name if self._entity.topic else None)

    async def run(self, stop: asyncio.Event) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = RECONNECT_FIRST_DELAY
            except (ServiceBusAuthenticationError, ServiceBusAuthorizationError) as error:
                self._metrics.reconnected()
                # Retrying at once would only hammer the broker: a role assignment or key rotation takes minutes.
                self._failed(f"Service Bus refused our credentials for {self._entity}: {one_line(error)}")
                delay = AUTH_FAILURE_DELAY
            except MessagingEntityNotFoundError as error:
                self._metrics.reconnected()
                self._failed(f"{self._entity} does not exist ({self._source.setting_for(self._entity)}): "
                             f"{one_line(error)}")
                delay = AUTH_FAILURE_DELAY
            except Exception as error:
                self._metrics.reconnected()
                if self.state.connected:  # this connection worked: a new failure starts the backoff again
                    delay = RECONNECT_FIRST_DELAY
                self._failed(f"receiver lost its connection ({one_line(error)}); reconnecting in {delay:.1f}s",
                             level=logging.WARNING)
            finally:
                self.state.connected = False
                self._up.clear()
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(RECONNECT_MAX_DELAY, delay * 2)
        log.info("listener stopped")

    @property
    def entity(self) -> Entity:
        return self._entity

    async def wait_connected(self) -> None:
        """Return once the receiver's link is open (at once when it is)."""
        await self._up.wait()

    def _connected(self) -> None:
        self.state.connected = True
        self.state.last_error = None
        self._up.set()
        log.info("listening on %s (max %d concurrent, prefetch %d)", self._entity,
                 self._settings.max_concurrent_messages, self._settings.prefetch_count)

    def _failed(self, message: str, level: int = logging.ERROR) -> None:
        self.state.last_error = message
        log.log(level, message)

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection's lifetime: receive until stop or a connection error, then drain."""
        client = self._client_factory()
        async with client:
            receiver = self._entity.receiver(
                client,
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                prefetch_count=self._settings.prefetch_count,
                **patches.receiver_options(),
            )
            renewer = LockKeeper(receiver, max_hold=MAX_LOCK_RENEWAL_SECONDS, metrics=self._metrics)
            try:
                async with receiver:  # opens the link: from here on we are connected
                    self._connected()
                    await self._receive_while_alive(client, receiver, renewer, stop)
                    await self._drain()
            finally:
                await self._abandon_leftovers()
                await renewer.close()
                if self._sender is not None:
                    with contextlib.suppress(Exception):
                        await self._sender.close()
                    self._sender = None

    async def _receive_while_alive(self, client: ServiceBusClient, receiver: ServiceBusReceiver,
                                   renewer: LockKeeper, stop: asyncio.Event) -> None:
        """Receive until stop, unless the link goes silent: then raise, so the session ends and reconnects.

        azure-servicebus gives its AMQP layer no idle timeout: a half-open link (no FIN, bytes dropped) would be
        waited on for ever, every receive returning nothing. A link with no sign of life for LIVENESS_IDLE_SECONDS
        is probed with a peek; a probe unanswered within LIVENESS_TIMEOUT_SECONDS ends the session.
        """
        self._last_alive = time.monotonic()
        receiving = asyncio.create_task(self._receive_loop(client, receiver, renewer, stop))
        watching = asyncio.create_task(self._watch(receiver))
        done, _ = await asyncio.wait({receiving, watching}, return_when=asyncio.FIRST_COMPLETED)
        for task in (receiving, watching):
            task.cancel()
        await asyncio.gather(receiving, watching, return_exceptions=True)
        for task in done:
            task.result()

    async def _watch(self, receiver: ServiceBusReceiver) -> None:
        while True:
            await asyncio.sleep(LIVENESS_IDLE_SECONDS / 2)
            if time.monotonic() - self._last_alive < LIVENESS_IDLE_SECONDS:
                continue
            try:
                await asyncio.wait_for(receiver.peek_messages(max_message_count=1), LIVENESS_TIMEOUT_SECONDS)
            except TimeoutError:
                raise ConnectionError(f"Service Bus did not answer for {LIVENESS_TIMEOUT_SECONDS:.0f}s: the link "
                                      "is half-open") from None
            self._last_alive = time.monotonic()

    async def _receive_loop(self, client: ServiceBusClient, receiver: ServiceBusReceiver, renewer: LockKeeper,
                            stop: asyncio.Event) -> None:
        limit = self._settings.max_concurrent_messages
        # Under load, refill slots a few at a time (one receive call per message cost 7% more CPU per message from
        # a backlog); a few slots left free by slow handlers are still used after REFILL_WAIT_SECONDS.
        refill = max(1, limit // 8)
        while not stop.is_set():
            free = limit - len(self._in_flight)
            if free < refill:
                self._slot_freed.clear()
                try:
                    async with asyncio.timeout(None if free <= 0 else REFILL_WAIT_SECONDS):
                        await self._slot_freed.wait()
                    continue
                except TimeoutError:
                    pass
            # With a prefetch buffer, ask only for what the buffer already holds (at least one): once a first
            # message arrives the SDK otherwise waits up to 0.2 s more for a batch of `free` to fill (that wait was
            # our whole p50 latency). Without a buffer, each call is a credit round trip, so ask for as many as we
            # can take.
            want = min(free, max(1, patches.buffered(receiver))) if self._settings.prefetch_count > 0 else free
            messages = await receiver.receive_messages(max_message_count=want, max_wait_time=RECEIVE_WAIT_SECONDS)
            if messages:
                self._last_alive = time.monotonic()
            for message in messages:
                task = asyncio.create_task(self._handle(client, receiver, renewer, message))
                self._in_flight.add(task)
                self._metrics.in_flight(1)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._metrics.in_flight(-1)
        self._slot_freed.set()

    async def _drain(self) -> None:
        """Give in-flight messages the grace period, then abandon what is still running."""
        if not self._in_flight:
            return
        grace = self._settings.shutdown_grace_seconds
        log.info("finishing %d in-flight message(s), up to %.0fs", len(self._in_flight), grace)
        _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _abandon_leftovers(self) -> None:
        """After a connection error, handlers still running are cancelled; their locks die with the link."""
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _handle(self, client: ServiceBusClient, receiver: ServiceBusReceiver, renewer: LockKeeper,
                      message: ServiceBusReceivedMessage) -> None:
        started = time.monotonic()
        renewer.hold(message)
        if self._tracer is None:
            await self._handle_in_scope(client, receiver, renewer, message, started, None)
            return
        # The span is current for the DTS calls (the SDK's spans become its children) and for the settlement.
        span = self._tracer.start(message)
        with self._tracer.current(span):
            await self._handle_in_scope(client, receiver, renewer, message, started, span)

    async def _handle_in_scope(self, client: ServiceBusClient, receiver: ServiceBusReceiver, renewer: LockKeeper,
                               message: ServiceBusReceivedMessage, started: float, span: Span | None) -> None:
        parsed: StartRequest | ApprovalRequest | Invalid | None = None
        action: Action
        try:
            try:
                parsed = self._parse(message)
                if span is not None and self._tracer is not None:
                    self._tracer.request(span, getattr(parsed, "orchestration", None),
                                         getattr(parsed, "instance_id", None))
                outcome = (None if isinstance(parsed, Invalid)
                           else await self._dispatcher.dispatch(parsed, message_id=messages.text(message.message_id)))
                # Only an approval still waiting for its instance needs its retry history read.
                window = self._settings.approval_not_found_window_seconds
                retries, since = 0, 0.0
                if isinstance(outcome, InstanceNotFound):
                    now = datetime.now(UTC)
                    history = RetryHistory.of(message, window, now)
                    retries, since = history.retries, history.seconds_since_first(now)
                action = decide(parsed, outcome, retries_so_far=retries, seconds_since_first_attempt=since,
                                not_found_window=window, message_id_length=len(str(message.message_id or "")))
            except asyncio.CancelledError:
                await asyncio.shield(self._settle(client, receiver, message, Abandon(AbandonReason.SHUTDOWN), parsed,
                                                  started, span))
                raise
            except Exception:
                log.exception("unexpected error handling message %s; abandoning it", _field(message.message_id))
                action = Abandon(AbandonReason.UNEXPECTED_ERROR)
            await asyncio.shield(self._settle(client, receiver, message, action, parsed, started, span))
        finally:
            renewer.release(message)

    def _parse(self, message: ServiceBusReceivedMessage) -> StartRequest | ApprovalRequest | Invalid:
        undecodable = messages.prop(message, PROP_UNDECODABLE)
        if undecodable is not None:
            return Invalid(Reason.UNDECODABLE_MESSAGE, str(undecodable))
        body = message_body(message)
        if isinstance(body, Invalid):
            return body
        return contract.parse(
            body,
            subject=messages.text(message.subject),
            content_type=messages.text(message.content_type),
            message_id=message.message_id,
            is_registered=self._is_registered,
            registered_names=self._registered_names,
            max_bytes=self._settings.max_message_bytes,
        )

    async def _settle(self, client: ServiceBusClient, receiver: ServiceBusReceiver,
                      message: ServiceBusReceivedMessage, action: Action,
                      parsed: StartRequest | ApprovalRequest | Invalid | None, started: float,
                      span: Span | None = None) -> None:
        """The only place that touches the settlement API."""
        applied: Action = action
        try:
            if isinstance(action, Complete):
                await receiver.complete_message(message)
            elif isinstance(action, DeadLetter):
                await receiver.dead_letter_message(
                    message, reason=action.reason, error_description=_description(action.description, span)
                )
            elif isinstance(action, RetryLater):
                if await self._reenqueue(client, message, action):
                    self._metrics.reenqueued()
                    await receiver.complete_message(message)
                else:
                    applied = Abandon(AbandonReason.REENQUEUE_FAILED)
                    await receiver.abandon_message(message)
            else:
                await receiver.abandon_message(message)
        except Exception as error:
            # Lost lock / link: Service Bus redelivers it, and every action we take is idempotent.
            log.warning("could not settle message %s (%s): %s; it will be redelivered", _field(message.message_id),
                        type(applied).__name__, one_line(error))
            if span is not None and self._tracer is not None:
                self._tracer.unsettled(span, one_line(error))
            return
        self._last_alive = time.monotonic()
        _log_settled(message, applied, parsed, started)
        label, reason = _action_label(applied), _reason(applied)
        self._metrics.settled(label, reason, time.monotonic() - started)
        if span is not None and self._tracer is not None:
            self._tracer.settled(span, label, reason)

    async def _reenqueue(self, client: ServiceBusClient, message: ServiceBusReceivedMessage,
                         action: RetryLater) -> bool:
        history = RetryHistory.of(message, self._settings.approval_not_found_window_seconds, datetime.now(UTC))
        properties: dict[str | bytes, Any] = {**messages.properties(message), **history.properties(action.attempt)}
        if self._tracer is not None:
            # The copy's span becomes a child of this attempt's span: one trace from the publisher to the raise.
            self._tracer.inject(properties)
        copy = messages.copy(message, body=messages.body_bytes(message), application_properties=properties)
        delay = action.delay * random.uniform(0.8, 1.2)
        copy.scheduled_enqueue_time_utc = datetime.now(UTC) + timedelta(seconds=delay)
        async with self._sender_lock:
            try:
                if self._sender is None:
                    self._sender = self._source.retry_sender(client)
                await self._sender.send_messages(copy)
            except Exception as error:
                log.warning("could not re-enqueue message %s: %s", _field(message.message_id), one_line(error))
                if self._sender is not None:
                    with contextlib.suppress(Exception):
                        await self._sender.close()
                    self._sender = None
                return False
        return True


def message_body(message: ServiceBusReceivedMessage) -> bytes | Invalid:
    """The body as bytes; AMQP value/sequence bodies from non-SDK publishers are refused with a reason."""
    try:
        return messages.body_bytes(message)
    except ValueError as error:
        return Invalid(Reason.UNSUPPORTED_BODY, str(error))


def _action_label(action: Action) -> str:
    if isinstance(action, RetryLater):
        return "reenqueue"
    return "dead_letter" if isinstance(action, DeadLetter) else type(action).__name__.lower()


def _reason(action: Action) -> str:
    if isinstance(action, Complete):
        return action.note
    return Reason.INSTANCE_NOT_FOUND.value if isinstance(action, RetryLater) else action.reason


def _description(description: str, span: Span | None) -> str:
    if span is None:
        return description[:MAX_DESCRIPTION_CHARS]
    suffix = f" (trace_id={span.get_span_context().trace_id:032x})"
    return description[:MAX_DESCRIPTION_CHARS - len(suffix)] + suffix


def _log_settled(message: ServiceBusReceivedMessage, action: Action, parsed: object, started: float) -> None:
    instance_id = getattr(parsed, "instance_id", None)
    reason = action.note if isinstance(action, Complete) else action.reason
    if isinstance(action, Abandon) and action.detail:
        reason = f"{action.reason} ({action.detail})"
    level = logging.WARNING if isinstance(action, DeadLetter | Abandon) else logging.INFO
    log.log(
        level,
        "settled message_id=%s subject=%s instance_id=%s action=%s reason=%s delivery_count=%s duration_ms=%.1f",
        _field(message.message_id), _field(messages.text(message.subject)), _field(instance_id),
        type(action).__name__.lower(), _field(reason) or "-", message.delivery_count,
        (time.monotonic() - started) * 1000,
    )


def _field(value: object) -> str:
    """Publishers choose these fields: a 200 KB subject must not become a 200 KB log line."""
    return clip(value, LOG_FIELD_CHARS, count=True)
