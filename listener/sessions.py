"""Session mode (SERVICEBUS_SESSIONS=true): up to MAX_CONCURRENT_SESSIONS sessions at once, each read through a
receiver of its own and handled one message at a time, in order.

Service Bus hands a session, with all its messages, to one receiver at a time under a session lock, and the SDK
opens one connection per session receiver. Each slot here therefore loops: accept the next available session
(Service Bus holds the request until some session has a message), read it until no message came for
SESSION_IDLE_SECONDS, then release it for any slot or replica to take again.

Order holds because a message is settled before the next one is handed to the pipeline. A message given back
(abandoned, or left unsettled) ends the reading of its session: Service Bus serves it first again, and the
messages this receiver already holds behind it are released with the session instead of being handled ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError

from listener.dead_receiver import Receiving
from listener.locks import RENEW_AHEAD_MAX, RENEW_SHARE, LockKeeper
from listener.pipeline import Pipeline
from listener.settlement import Abandon
from listener.settler import field
from sbworker import patches
from sbworker.core.config import ListenerSettings
from sbworker.core.entities import Entity, Source
from sbworker.core.errors import one_line
from sbworker.observability.metrics import Metrics

log = logging.getLogger(__name__)

# The SDK retries an accept that found no session three times, with backoff: 19 s in all for a 1 s wait (measured),
# during which a slot is blind to new sessions. Our slots ask again at once instead; a settlement or renewal that
# fails is not retried either, since its session is then released and its messages come back in order.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 0}
# How long Service Bus may hold an accept while no session has a message (it answers "timeout" after that, and the
# slot asks again). The first accept of a connection is short, so that readiness does not wait for it.
ACCEPT_WAIT_SECONDS = 10.0
FIRST_ACCEPT_WAIT_SECONDS = 0.5
# Service Bus answers within a call's own wait plus this, or the connection is taken for half-open (liveness.py).
ANSWER_MARGIN_SECONDS = 10.0
# Longest single receive call while reading a session: bounds how late idleness and a lost lock are noticed.
RECEIVE_WAIT_SECONDS = 1.0
CLOSE_SECONDS = 5.0


class SessionsMismatch(Exception):
    """The entity's RequiresSession and SERVICEBUS_SESSIONS disagree: only a change of configuration helps."""


def mismatch(error: BaseException, entity: Entity, source: Source) -> str | None:
    """The one line for a receiver refused because the entity's sessions and SERVICEBUS_SESSIONS disagree, or None.

    Service Bus refuses such a link with amqp:not-allowed and a text about sessions, either way round."""
    text = str(error)
    if not isinstance(error, ServiceBusError) or "not-allowed" not in text or "session" not in text.lower():
        return None
    setting = source.setting_for(entity)
    if source.sessions:
        return (f"{entity} does not require sessions, but SERVICEBUS_SESSIONS=true: set SERVICEBUS_SESSIONS=false, "
                f"or name a session-enabled entity in {setting}")
    return (f"{entity} requires sessions: set SERVICEBUS_SESSIONS=true to read it (each session's messages are then "
            f"handled one at a time, in order), or name an entity without sessions in {setting}")


class SessionReader:
    """Reads the sessions of one entity through `limit` slots, each holding at most one session at a time."""

    def __init__(self, entity: Entity, *, pipeline: Pipeline, settings: ListenerSettings, metrics: Metrics,
                 alive: Callable[[], None]) -> None:
        self._entity = entity
        self._pipeline = pipeline
        self._limit = settings.max_concurrent_sessions
        self._idle = settings.session_idle_seconds
        self._prefetch = settings.prefetch_count
        self._grace = settings.shutdown_grace_seconds
        self._metrics = metrics
        self._alive = alive
        self._busy: set[asyncio.Task[Any]] = set()  # slots handling a message: at a stop, they get the grace period
        self._closing: set[asyncio.Task[None]] = set()
        self.held: set[str] = set()  # the sessions held now
        self._no_locks = _SessionMessages(None, max_hold=0.0)

    async def run(self, client: ServiceBusClient, stop: asyncio.Event, connected: Callable[[], None]) -> None:
        """Read sessions until `stop`, then drain; raises what ended a slot (a refused or broken connection)."""
        slots = [asyncio.create_task(self._slot(client, stop, connected), name=f"session slot {i}")
                 for i in range(self._limit)]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({*slots, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                task.result()  # a slot ends early only by raising
            # Stopping: slots waiting for a session or a message end now; one handling a message finishes it
            # within the grace period, then releases its session (what it holds behind that message goes back).
            for task in slots:
                if task not in self._busy:
                    task.cancel()
            _, late = await asyncio.wait(slots, timeout=self._grace)
            if late:
                log.info("grace period over: giving back the messages of %d session(s)", len(late))
        finally:
            stopping.cancel()
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, stopping, return_exceptions=True)
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _slot(self, client: ServiceBusClient, stop: asyncio.Event, connected: Callable[[], None]) -> None:
        wait = FIRST_ACCEPT_WAIT_SECONDS
        while not stop.is_set():
            # The SDK's own socket timeout (not the one-link listener's 20 ms): a settlement here never waits behind
            # a receive call (the next receive starts after it), and a slot waiting for a session polls 10x less.
            receiver = self._entity.receiver(
                client, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=wait,
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK, prefetch_count=self._prefetch,
            )
            try:
                try:
                    async with asyncio.timeout(wait + ANSWER_MARGIN_SECONDS):
                        await receiver.__aenter__()
                except OperationTimeoutError:  # Service Bus answered: no session has a message now
                    connected()
                    wait = ACCEPT_WAIT_SECONDS
                    continue
                except TimeoutError:
                    raise ConnectionError(f"Service Bus did not answer a session accept within "
                                          f"{wait + ANSWER_MARGIN_SECONDS:.0f}s: the connection is half-open") from None
                connected()
                wait = ACCEPT_WAIT_SECONDS
                await self._read(receiver, stop)
            finally:
                # The detach that releases the session goes out at once; the SDK then waits up to a second for its
                # keep-alive task, which this slot need not: it accepts the next session meanwhile.
                closing = asyncio.create_task(_close(receiver))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    async def _read(self, receiver: ServiceBusReceiver, stop: asyncio.Event) -> None:
        """Handle one session's messages in order until it is idle, lost, given back or we stop."""
        session_id = receiver.session.session_id
        self.held.add(session_id)
        log.info("accepted session %s of %s", field(session_id), self._entity)
        lost = asyncio.Event()
        keeping = asyncio.create_task(self._keep_lock(receiver, lost))
        why, level = "stopping", logging.INFO
        try:
            why = await self._messages(receiver, stop, lost)
        except Exception as error:  # this session's link failed: the next accept tells whether the connection did
            why, level = f"failed: {one_line(error)}", logging.WARNING
        finally:
            self.held.discard(session_id)
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            log.log(level, "released session %s of %s (%s)", field(session_id), self._entity, why)

    async def _messages(self, receiver: ServiceBusReceiver, stop: asyncio.Event, lost: asyncio.Event) -> str:
        """Why the reading of this session ended: idle, lock lost, stopping, or a message given back."""
        me = asyncio.current_task()
        assert me is not None
        receiving = Receiving(receiver)
        last = time.monotonic()
        while True:
            left = self._idle - (time.monotonic() - last)
            if stop.is_set():
                return "stopping"
            if lost.is_set():
                return "lock lost"
            if left <= 0:
                return "idle"
            wait = min(left, RECEIVE_WAIT_SECONDS)
            # With a prefetch buffer, ask for what it holds (at least one): asking for more than arrives makes the
            # SDK wait 0.2 s for the rest. Without one, one at a time: each call is then a credit round trip.
            want = max(1, patches.buffered(receiver)) if self._prefetch > 0 else 1
            async with asyncio.timeout(wait + ANSWER_MARGIN_SECONDS):
                batch = await receiving.receive(want, wait)
            if not batch:
                continue
            self._alive()
            for message in batch:
                if stop.is_set() or lost.is_set():
                    break  # the rest go back with the session, in order
                self._busy.add(me)
                self._metrics.in_flight(1)
                try:
                    applied = await self._pipeline.handle(receiver, self._no_locks, message)
                finally:
                    self._busy.discard(me)
                    self._metrics.in_flight(-1)
                if applied is None:
                    return f"message {field(message.message_id)} not settled"
                if isinstance(applied, Abandon):
                    return f"message {field(message.message_id)} given back"
            last = time.monotonic()

    async def _keep_lock(self, receiver: ServiceBusReceiver, lost: asyncio.Event) -> None:
        """Renew the session lock as the LockKeeper renews message locks; set `lost` when a renewal fails."""
        session = receiver.session
        length = max(0.5, _seconds_left(session.locked_until_utc))
        while True:
            ahead = min(RENEW_AHEAD_MAX, length * RENEW_SHARE)
            await asyncio.sleep(max(0.05, _seconds_left(session.locked_until_utc) - ahead))
            try:
                async with asyncio.timeout(ANSWER_MARGIN_SECONDS):
                    await session.renew_lock()
            except Exception as error:
                log.warning("could not renew the lock of session %s: %s; releasing it", field(session.session_id),
                            one_line(error))
                self._metrics.lock_lost()
                lost.set()
                return
            self._metrics.lock_renewed()


class _SessionMessages(LockKeeper):
    """Session messages have no lock of their own (the session's covers them): nothing to hold or renew."""

    def hold(self, message: Any) -> None:
        return None


async def _close(receiver: ServiceBusReceiver) -> None:
    """Release the session (and what the receiver still holds of it); never hang on a dead connection."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_SECONDS):
            await receiver.close()


def _seconds_left(until: datetime | None) -> float:
    if until is None:
        return 0.0
    aware = until if until.tzinfo else until.replace(tzinfo=UTC)
    return (aware - datetime.now(UTC)).total_seconds()
