"""`sbworker run`: the listener and the DTS worker co-hosted in one process, plus the health endpoints.

Either half can be switched off to scale them separately. SIGTERM/SIGINT stop receiving, let in-flight
messages finish within the grace period, release the rest, stop the worker, and return 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

from listener.dispatch import Dispatcher
from listener.health import HealthServer
from listener.receiver import Listener
from orchestrations import registry
from sbworker import patches
from sbworker.core import clients
from sbworker.core.config import DtsSettings, Settings
from sbworker.observability import telemetry
from sbworker.observability.metrics import NOOP, TimedDts

log = logging.getLogger(__name__)

READINESS_PROBE_ID = "sbworker-readiness-probe"


async def serve(
    settings: Settings,
    *,
    with_worker: bool = True,
    with_listener: bool = True,
    stop: asyncio.Event | None = None,
    servicebus_credential: AsyncTokenCredential | None = None,
    dts_credential: TokenCredential | None = None,
    dts_async_credential: AsyncTokenCredential | None = None,
    on_listener: Any = None,
    telemetry_setup: Any = None,
) -> int:
    """Run until `stop` is set (or a signal arrives). Returns the process exit code.

    `telemetry_setup` (tests) replaces `telemetry.setup`; it must come before the worker, whose spans use the
    global tracer provider that setup installs.
    """
    stop = stop or asyncio.Event()
    restore_signals = _install_signal_handlers(stop)
    observed = (telemetry_setup or telemetry.setup)(settings.telemetry)
    patches.log_state()
    worker = None
    if with_worker:
        worker = dts_worker(settings.dts, credential=dts_credential)
        worker.start()
        log.info("DTS worker started (%s, task hub %r, %d orchestrations)", settings.dts.endpoint,
                 settings.dts.taskhub, len(registry.ORCHESTRATORS))
    def dts_client() -> Any:
        client = clients.dts_async_client(settings.dts, credential=dts_async_credential)
        return client if observed.metrics is NOOP else TimedDts(client, observed.metrics)

    dispatcher = Dispatcher(dts_client(), reconnect=dts_client)
    # One listener per entity: the queue; or the subscription and the retry queue (sbworker/core/entities.py).
    source = settings.servicebus.source
    listeners: list[Listener] = []
    for entity in source.receive_from if with_listener else ():
        listener = Listener(
            client_factory=lambda: clients.servicebus_client(settings.servicebus, credential=servicebus_credential),
            source=source,
            entity=entity,
            dispatcher=dispatcher,
            settings=settings.listener,
            is_registered=registry.is_startable,
            registered_names=registry.orchestration_names,
            telemetry=observed,
        )
        listeners.append(listener)
        if on_listener is not None:
            on_listener(listener)

    async def readiness() -> dict[str, bool]:
        checks = {"dts": await _dts_reachable(dispatcher.client)}
        if listeners:
            checks["servicebus"] = all(listener.state.connected for listener in listeners)
        return checks

    health = (HealthServer(settings.listener.health_port, readiness, host=settings.listener.health_host,
                           metrics=observed.prometheus, details=lambda: {"sdk_patches": patches.active()})
              if settings.listener.health_port else None)
    try:
        if health is not None:
            await health.start()
        if listeners:
            log.info("listening to %s %s", settings.servicebus.endpoint_for_logs, source)
            await asyncio.gather(*(listener.run(stop) for listener in listeners))
        else:
            await stop.wait()
    finally:
        if health is not None:
            await health.stop()
        with contextlib.suppress(Exception):
            await dispatcher.close()
        if worker is not None:
            await asyncio.to_thread(worker.stop)
            log.info("DTS worker stopped")
        await asyncio.to_thread(observed.shutdown)  # the last spans and a final metrics push
        restore_signals()
    return 0


def dts_worker(settings: DtsSettings, *, credential: TokenCredential | None = None) -> DurableTaskSchedulerWorker:
    """The co-hosted worker: every registered orchestration and activity; not started."""
    worker = clients.dts_worker(settings, credential=credential)
    registry.register(worker)
    return worker


async def _dts_reachable(dts: Any) -> bool:
    try:
        await asyncio.wait_for(dts.get_orchestration_state(READINESS_PROBE_ID, fetch_payloads=False), 3.0)
        return True
    except Exception:
        return False


def _install_signal_handlers(stop: asyncio.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set `stop`; returns what puts back the handlers the process had before.

    asyncio resets a removed SIGINT handler to Python's default rather than to what was there, so a service run
    inside a bigger program (a test, an embedding) would otherwise leave its signal handling changed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal, stop, sig)
            previous[sig] = before

    def restore() -> None:
        for sig, before in previous.items():
            loop.remove_signal_handler(sig)
            if before is not None:
                signal.signal(sig, before)
    return restore


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("%s received: stopping (in-flight messages get the grace period)", sig.name)
    stop.set()
