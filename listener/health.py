"""`GET /healthz` (the process is alive), `GET /readyz` (receiver connected and DTS reachable) and `GET /metrics`
(Prometheus text, when telemetry is enabled).

Served by aiohttp on a thread and event loop of its own: a flood of probes (or a client that sends a 64 KiB
header) is aiohttp's to refuse, and never queues behind, or in front of, message handling on the listener's loop.
Readiness is computed at most once per `cache_seconds` on the listener's loop, whatever the request rate.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import http_exceptions, web

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Coroutine[Any, Any, dict[str, bool]]]
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# aiohttp refuses longer request lines and header fields with 400, and more headers than this.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 64
# Probes do not keep connections: an idle one is closed after this many seconds.
KEEPALIVE_SECONDS = 5.0
READINESS_TIMEOUT_SECONDS = 5.0


class OneLineBadRequests(logging.Filter):
    """aiohttp logs each malformed request (a 64 KiB header, garbage) with a traceback: one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, http_exceptions.HttpProcessingError):
            record.msg, record.args = "refused a malformed HTTP request: %s", (str(error).splitlines()[0][:200],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_BAD_REQUESTS = OneLineBadRequests()


class HealthServer:
    def __init__(self, port: int, readiness: ReadinessCheck, *, host: str = "0.0.0.0", cache_seconds: float = 2.0,
                 metrics: Callable[[], str] | None = None, details: Callable[[], dict[str, Any]] | None = None
                 ) -> None:
        """`details` adds facts to /readyz that do not decide readiness (the active SDK patches)."""
        self._port = port
        self._details = details
        self._metrics = metrics
        self._host = host
        self._readiness = readiness
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, bool]] | None = None
        self._checks_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._check_lock: asyncio.Lock | None = None
        self._bound_port = port

    @property
    def port(self) -> int:
        return self._bound_port

    async def start(self) -> None:
        """Serve on a new thread; returns once the port is bound (or raises what binding raised)."""
        self._checks_loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._checks_loop.create_future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="health", daemon=True)
        self._thread.start()
        await ready
        log.info("health endpoints on http://%s:%d/healthz and /readyz", self._host, self.port)

    async def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
        self._loop = self._thread = None

    def _serve(self, ready: asyncio.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        assert self._checks_loop is not None
        checks_loop = self._checks_loop
        try:
            loop.run_until_complete(self._bind())
        except BaseException as error:
            checks_loop.call_soon_threadsafe(_settle, ready, error)
            loop.close()
            return
        checks_loop.call_soon_threadsafe(_settle, ready, None)
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _bind(self) -> None:
        server_log = logging.getLogger("aiohttp.server")
        if _BAD_REQUESTS not in server_log.filters:
            server_log.addFilter(_BAD_REQUESTS)
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._metrics_text)
        app.router.add_route("*", "/{anything:.*}", self._not_found)
        self._check_lock = asyncio.Lock()
        self._runner = web.AppRunner(
            # RequestHandler settings, passed flat: given `handler_args=`, aiohttp 3.14 drops them all (with a
            # warning on every connection) and serves with its defaults.
            app, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS,
            max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES, max_headers=MAX_HEADERS,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # the bound socket tells us the port when 0 was asked for
        if isinstance(server, asyncio.base_events.Server) and server.sockets:
            self._bound_port = int(server.sockets[0].getsockname()[1])

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _metrics_text(self, _request: web.Request) -> web.Response:
        assert self._metrics is not None
        # Collection takes the SDK's locks for a moment; this loop serves only probes, so it can wait.
        return web.Response(body=self._metrics().encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _not_found(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "not found"}, status=404)

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = await self._checks()
        ok = all(checks.values())
        details = self._details() if self._details is not None else {}
        return web.json_response({"status": "ready" if ok else "not ready", **checks, **details},
                                 status=200 if ok else 503)

    async def _checks(self) -> dict[str, bool]:
        assert self._check_lock is not None and self._checks_loop is not None
        async with self._check_lock:  # concurrent probes share one check
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            try:
                future = asyncio.run_coroutine_threadsafe(self._readiness(), self._checks_loop)
                checks = await asyncio.wait_for(asyncio.wrap_future(future), READINESS_TIMEOUT_SECONDS)
            except Exception:
                checks = {"ready_check": False}
            self._cached = (time.monotonic(), checks)
            return checks


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
