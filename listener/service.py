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

from listener import gc_tuning
from listener.dispatch import Dispatcher
from listener.health import HealthServer
from listener.receiver import Listener
from orchestrations import registry
from sbworker import patches
from sbworker.core import clients, event_loop
from sbworker.core.config import DtsSettings, Settings, WorkerSettings
from sbworker.core.worker_guard import WorkerGuard
from sbworker.observability.metrics import NOOP, TimedDts
from sbworker.observability.telemetry import Telemetry, spans_recorded

log = logging.getLogger(__name__)

READINESS_PROBE_ID = "sbworker-readiness-probe"


class _StoppingWorker(logging.Filter):
    """Stopping the worker cancels its work-item stream, which the SDK logs as a WARNING with the gRPC CANCELLED
    status: that is our own stop, not an error, and a clean Ctrl-C must print nothing alarming."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and "StatusCode.CANCELLED" in record.getMessage())


_OUR_CANCELLATION = _StoppingWorker()


class Service:
    """The listeners (one per entity the source names) and the co-hosted DTS worker, plus the health endpoints.

    `start` returns once everything runs, `ready` once every receiver is connected, `stop` drains in-flight
    messages within the grace period and shuts everything down (the telemetry it was given included). Everything
    it talks through is built from `settings`; the credentials (tests pass fakes) and `telemetry` are injected.
    """

    def __init__(self, settings: Settings, *, telemetry: Telemetry | None = None, with_worker: bool = True,
                 with_listener: bool = True, servicebus_credential: AsyncTokenCredential | None = None,
                 dts_credential: TokenCredential | None = None,
                 dts_async_credential: AsyncTokenCredential | None = None,
                 dispatcher: Dispatcher | None = None) -> None:
        """`dispatcher` (tests wrap one to inject DTS failures) replaces the one built from the settings; the
        Service then leaves closing it, and its client, to the caller."""
        self.settings = settings
        # Set up by the caller before the worker starts: its spans use the global tracer provider setup installs.
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self._with_worker = with_worker
        self._loop_kind = settings.listener.event_loop  # until start() reads the running loop
        self._dts_credential = dts_credential
        self._dts_async_credential = dts_async_credential
        self._stop = asyncio.Event()
        self._worker: DurableTaskSchedulerWorker | None = None
        self.guard = WorkerGuard()  # keeps one work item from stopping the worker; its health is in /readyz
        self._tasks: list[asyncio.Task[None]] = []
        self._owns_dispatcher = dispatcher is None
        self.dispatcher = dispatcher or Dispatcher(self._dts_client(), reconnect=self._dts_client)
        source = settings.servicebus.source
        self.listeners = [Listener(
            client_factory=lambda **options: clients.servicebus_client(settings.servicebus,
                                                                       credential=servicebus_credential, **options),
            source=source,
            entity=entity,
            dispatcher=self.dispatcher,
            settings=settings.listener,
            is_registered=registry.is_startable,
            registered_names=registry.orchestration_names,
            observer=self.telemetry.observer(entity.topic or entity.name, entity.name if entity.topic else None),
            bounds=settings.limits,
            input_problem=registry.input_problem,
        ) for entity in (source.receive_from if with_listener else ())]
        listen = settings.listener
        self.health = (HealthServer(listen.health_port, self._readiness, host=listen.health_host,
                                    metrics=self.telemetry.prometheus,
                                    details=lambda: {"sdk_patches": patches.active(), "event_loop": self._loop_kind},
                                    reasons=self._reasons)
                       if listen.health_port else None)

    def _dts_client(self) -> Any:
        client = clients.dts_async_client(self.settings.dts, credential=self._dts_async_credential,
                                          emit_trace_spans=spans_recorded(), minimal_stack=True)
        metrics = self.telemetry.metrics
        return client if metrics is NOOP else TimedDts(client, metrics)

    async def start(self) -> None:
        """Start the worker, the health endpoints and the listeners; returns without waiting for a connection."""
        patches.log_state()
        self._loop_kind = event_loop.running_kind()  # the health endpoint answers from a loop of its own
        log.info("event loop: %s (EVENT_LOOP)", self._loop_kind)
        if self._with_worker:
            self._worker = dts_worker(self.settings.dts, credential=self._dts_credential, guard=self.guard,
                                      concurrency=self.settings.worker)
            self._worker.start()
            log.info("DTS worker started (%s, task hub %r, %d orchestrations)", self.settings.dts.endpoint,
                     self.settings.dts.taskhub, len(registry.ORCHESTRATORS))
        if self.health is not None:
            await self.health.start()
        if self.listeners:
            log.info("listening to %s %s", self.settings.servicebus.endpoint_for_logs, self.settings.servicebus.source)
        self._tasks = [asyncio.create_task(listener.run(self._stop), name=f"listener {listener.entity}")
                       for listener in self.listeners]

    async def ready(self, timeout: float = 30.0) -> None:
        """Return once every receiver is connected; raise TimeoutError naming the ones that are not."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(listener.wait_connected() for listener in self.listeners))
        except TimeoutError:
            waiting = [str(listener.entity) for listener in self.listeners if not listener.state.connected]
            raise TimeoutError(f"not connected within {timeout:.0f}s: {', '.join(waiting)}") from None

    async def stop(self) -> None:
        """Stop receiving, give in-flight messages the grace period, then stop everything else. Idempotent."""
        self._stop.set()
        try:
            if self._tasks:
                await asyncio.gather(*self._tasks)
            self._tasks = []
        finally:
            if self.health is not None:
                await self.health.stop()
            if self._owns_dispatcher:
                with contextlib.suppress(Exception):
                    await self.dispatcher.close()
            if self._worker is not None:
                worker_log = logging.getLogger("durabletask.worker")
                worker_log.addFilter(_OUR_CANCELLATION)
                try:
                    await asyncio.to_thread(self._worker.stop)
                finally:
                    worker_log.removeFilter(_OUR_CANCELLATION)
                self._worker = None
                log.info("DTS worker stopped")
            await asyncio.to_thread(self.telemetry.shutdown)  # the last spans and a final metrics push

    async def _readiness(self) -> dict[str, bool]:
        checks = {"dts": await _dts_reachable(self.dispatcher.client)}
        if self.listeners:
            checks["servicebus"] = all(listener.state.connected for listener in self.listeners)
        if self._with_worker:
            checks["worker"] = self.guard.health.problem() is None
        return checks

    def _reasons(self) -> dict[str, str]:
        """Why a failing check fails, where there is more to say than false (called on the health thread): the
        worker's problem, and each disconnected receiver's last error (a refused credential, a missing entity, an
        entity whose sessions disagree with SERVICEBUS_SESSIONS)."""
        reasons: dict[str, str] = {}
        problem = self.guard.health.problem() if self._with_worker else None
        if problem:
            reasons["worker"] = problem
        errors = [listener.state.last_error for listener in self.listeners
                  if not listener.state.connected and listener.state.last_error]
        if errors:
            reasons["servicebus"] = "; ".join(dict.fromkeys(e for e in errors if e))
        return reasons


async def serve(settings: Settings, *, stop: asyncio.Event | None = None, telemetry: Telemetry | None = None,
                with_worker: bool = True, with_listener: bool = True) -> int:
    """`sbworker run`: a Service until `stop` is set or SIGTERM/SIGINT arrives. Returns the process exit code."""
    stop = stop or asyncio.Event()
    restore_signals = _install_signal_handlers(stop)
    service = Service(settings, telemetry=telemetry, with_worker=with_worker, with_listener=with_listener)
    restore_gc = None
    try:
        await service.start()
        restore_gc = gc_tuning.tune()  # after start-up: what it built is frozen with the imports
        await stop.wait()
    finally:
        await service.stop()
        restore_signals()
        if restore_gc is not None:
            restore_gc()
    return 0


def dts_worker(settings: DtsSettings, *, credential: TokenCredential | None = None,
               guard: WorkerGuard | None = None, concurrency: WorkerSettings | None = None
               ) -> DurableTaskSchedulerWorker:
    """The co-hosted worker: every registered orchestration and activity; not started (`concurrency` None: the
    SDK's defaults)."""
    worker = clients.dts_worker(settings, credential=credential, guard=guard, concurrency=concurrency)
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
