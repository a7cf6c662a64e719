"""The listener: one receiver link, kept open. Received messages go to the pipeline (listener/pipeline.py).

One Listener reads one entity: a queue, a topic subscription, or the topic form's retry queue
(sbworker/core/entities.py). This module is the connection's lifetime only: it reconnects with backoff after any
failure, and each session composes the jobs of its own modules: slots (bounded concurrency), liveness (the
half-open-link watchdog), the lock keeper, the pipeline, and the settler. On stop it gives in-flight messages the
grace period, abandons what is left, and lets the SDK release what it prefetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
)

from listener.dispatch import Dispatcher
from listener.liveness import Liveness
from listener.locks import LockKeeper
from listener.pipeline import Pipeline
from listener.sessions import CLIENT_OPTIONS, SessionReader, mismatch
from listener.settler import Settler
from listener.slots import Slots
from sbworker import patches
from sbworker.core.config import ListenerSettings
from sbworker.core.contract import InputCheck
from sbworker.core.entities import Entity, Source
from sbworker.core.errors import one_line
from sbworker.core.limits import DEFAULT_LIMITS, Limits
from sbworker.observability.observer import NO_OBSERVER, Observer

log = logging.getLogger(__name__)

# Keep a lock for at most this long while handling one message (transient retries are far shorter).
MAX_LOCK_RENEWAL_SECONDS = 600.0
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 30.0
AUTH_FAILURE_DELAY = 60.0


@dataclass
class ListenerState:
    """What /readyz and tests look at."""

    connected: bool = False
    last_error: str | None = None


class Listener:
    """Receives from one entity until `stop` is set; never exits because of a broker or DTS failure.

    `client_factory(**options)` makes a Service Bus client (options as for the SDK's client, e.g. retry_total).

    `entity` is one of `source.receive_from` (default: the queue or subscription). Early approvals are
    re-enqueued, as scheduled copies, to the source's retry queue: the queue itself, or in the topic form a queue
    only this worker reads (another Listener receives from it).
    """

    def __init__(
        self,
        *,
        client_factory: Callable[..., ServiceBusClient],
        source: Source,
        entity: Entity | None = None,
        dispatcher: Dispatcher,
        settings: ListenerSettings,
        is_registered: Callable[[str], bool],
        registered_names: Callable[[], list[str]],
        observer: Observer = NO_OBSERVER,
        bounds: Limits = DEFAULT_LIMITS,
        input_problem: InputCheck | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._source = source
        self._entity = entity or source.entity
        self._settings = settings
        self._observer = observer
        self.state = ListenerState()
        self._up = asyncio.Event()  # set while connected: what Service.ready waits on
        self._liveness = Liveness()
        self._settler = Settler(source, not_found_window=settings.approval_not_found_window_seconds,
                                observer=observer, alive=self._liveness.alive)
        self._pipeline = Pipeline(dispatcher=dispatcher, settler=self._settler, settings=settings, observer=observer,
                                  is_registered=is_registered, registered_names=registered_names, bounds=bounds,
                                  input_problem=input_problem)
        # Session mode: sessions read one message at a time each (listener/sessions.py) instead of one link.
        self.sessions = (SessionReader(self._entity, pipeline=self._pipeline, settings=settings,
                                       metrics=observer.metrics, alive=self._liveness.alive)
                         if source.sessions else None)

    @property
    def entity(self) -> Entity:
        return self._entity

    @property
    def observer(self) -> Observer:
        return self._observer

    async def wait_connected(self) -> None:
        """Return once the receiver's link is open (at once when it is)."""
        await self._up.wait()

    async def run(self, stop: asyncio.Event) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = RECONNECT_FIRST_DELAY
            except (ServiceBusAuthenticationError, ServiceBusAuthorizationError) as error:
                self._observer.metrics.reconnected()
                # Retrying at once would only hammer the broker: a role assignment or key rotation takes minutes.
                self._failed(f"Service Bus refused our credentials for {self._entity}: {one_line(error)}")
                delay = AUTH_FAILURE_DELAY
            except MessagingEntityNotFoundError as error:
                self._observer.metrics.reconnected()
                self._failed(f"{self._entity} does not exist ({self._source.setting_for(self._entity)}): "
                             f"{one_line(error)}")
                delay = AUTH_FAILURE_DELAY
            except Exception as error:
                self._observer.metrics.reconnected()
                refused = mismatch(error, self._entity, self._source)
                if refused is not None:  # only a change of configuration helps: say so once a minute, not in a loop
                    self._failed(refused)
                    delay = AUTH_FAILURE_DELAY
                else:
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

    def _connected(self) -> None:
        if self.state.connected:
            return
        self.state.connected = True
        self.state.last_error = None
        self._up.set()
        listen = self._settings
        if self.sessions is not None:
            log.info("listening on %s (sessions: %d at once, each released after %gs idle; prefetch %d)",
                     self._entity, listen.max_concurrent_sessions, listen.session_idle_seconds, listen.prefetch_count)
        else:
            log.info("listening on %s (max %d concurrent, prefetch %d)", self._entity,
                     listen.max_concurrent_messages, listen.prefetch_count)

    def _failed(self, message: str, level: int = logging.ERROR) -> None:
        self.state.last_error = message
        log.log(level, message)

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection's lifetime: receive until stop or a connection error, then drain."""
        client = self._client_factory(**(CLIENT_OPTIONS if self.sessions is not None else {}))
        async with client:
            if self.sessions is not None:
                self._settler.open(client, None)
                try:
                    await self.sessions.run(client, stop, self._connected)
                finally:
                    await self._settler.close()
                return
            receiver = self._entity.receiver(
                client,
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                prefetch_count=self._settings.prefetch_count,
                **patches.receiver_options(),
            )
            renewer = LockKeeper(receiver, max_hold=MAX_LOCK_RENEWAL_SECONDS, metrics=self._observer.metrics)
            slots = Slots(self._settings.max_concurrent_messages, prefetch=self._settings.prefetch_count,
                          metrics=self._observer.metrics)
            self._settler.open(client, receiver)
            try:
                async with receiver:  # opens the link: from here on we are connected
                    self._connected()
                    await self._receive_while_alive(receiver, renewer, slots, stop)
                    await slots.drain(self._settings.shutdown_grace_seconds)
            finally:
                await slots.cancel()
                await renewer.close()
                await self._settler.close()

    async def _receive_while_alive(self, receiver: ServiceBusReceiver, renewer: LockKeeper, slots: Slots,
                                   stop: asyncio.Event) -> None:
        """Receive until stop, unless the link goes silent (listener/liveness.py): then raise, and reconnect."""

        async def handle(message: ServiceBusReceivedMessage) -> None:
            await self._pipeline.handle(receiver, renewer, message)

        receiving = asyncio.create_task(slots.fill(receiver, stop, handle, self._liveness.alive))
        watching = asyncio.create_task(self._liveness.watch(receiver))
        done, _ = await asyncio.wait({receiving, watching}, return_when=asyncio.FIRST_COMPLETED)
        for task in (receiving, watching):
            task.cancel()
        await asyncio.gather(receiving, watching, return_exceptions=True)
        for task in done:
            task.result()
