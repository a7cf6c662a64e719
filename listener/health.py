"""`GET /healthz` (the process is alive), `GET /readyz` (receiver connected, DTS reachable, the co-hosted worker
making progress; a 503 says why) and `GET /metrics` (Prometheus text, when telemetry is enabled).

Served by aiohttp on a thread and event loop of its own (sbworker/core/site.py): a flood of probes (or a client
that sends a 64 KiB header) is aiohttp's to refuse, and never queues behind, or in front of, message handling on
the listener's loop.
Readiness is computed at most once per `cache_seconds` on the listener's loop, whatever the request rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import http_exceptions, web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sbworker.core.site import ThreadedSite

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Coroutine[Any, Any, dict[str, bool]]]

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
                 metrics: Callable[[], str] | None = None, details: Callable[[], dict[str, Any]] | None = None,
                 reasons: Callable[[], dict[str, str]] | None = None) -> None:
        """`details` adds facts to /readyz that do not decide readiness (the active SDK patches); `reasons`
        (thread-safe) explains failing checks in a 503's body, e.g. why the worker cannot make progress."""
        self._reasons = reasons
        self._metrics = metrics
        self._details = details
        self._readiness = readiness
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, bool]] | None = None
        self._checks_loop: asyncio.AbstractEventLoop | None = None
        self._check_lock: asyncio.Lock | None = None
        self._site = ThreadedSite(self._app, host, port, name="health", keepalive_timeout=KEEPALIVE_SECONDS)

    @property
    def port(self) -> int:
        return self._site.port

    async def start(self) -> None:
        """Serve on a thread of its own; returns once the port is bound (or raises what binding raised)."""
        self._checks_loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._site.start)
        log.info("health endpoints on http://%s:%d/healthz and /readyz", self._site.host, self.port)

    async def stop(self) -> None:
        await asyncio.to_thread(self._site.stop)

    async def _app(self) -> web.Application:
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
        return app

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _metrics_text(self, _request: web.Request) -> web.Response:
        assert self._metrics is not None
        # Collection takes the SDK's locks for a moment; this loop serves only probes, so it can wait.
        return web.Response(body=self._metrics().encode(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _not_found(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "not found"}, status=404)

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = await self._checks()
        ok = all(checks.values())
        details = self._details() if self._details is not None else {}
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", **checks, **details}
        reasons = {name: why for name, why in (self._reasons() if self._reasons and not ok else {}).items()
                   if checks.get(name) is False}
        if reasons:
            body["reasons"] = reasons
        return web.json_response(body, status=200 if ok else 503)

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
