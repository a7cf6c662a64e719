"""The dashboard on a thread and event loop of its own, so that `sbworker dev` and `sbworker dashboard` can run it
beside anything else (the listener's loop never waits for a page, and a slow page never delays a message).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading

from aiohttp import web

from sbworker.core.config import Settings
from sbworker.core.errors import ConfigError
from sbworker.core.net import is_loopback
from sbworker.dashboard import traces
from sbworker.dashboard.app import create_app

log = logging.getLogger(__name__)

# Header limits: a page needs no 64 KiB header. (They are RequestHandler keywords, passed flat: aiohttp drops
# every custom setting, with a warning, when given something it does not take, such as `handler_args=`.)
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 64


class Dashboard:
    """A running dashboard: `url`, `port`, and `stop()` (idempotent)."""

    def __init__(self, settings: Settings, host: str, port: int, trace_link: traces.TraceLink,
                 spans: traces.SpanSource | None = None) -> None:
        self.host = host
        self.port = port
        self._settings = settings
        self._trace_link = trace_link
        self._spans = spans
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        shown = "localhost" if is_loopback(self.host) else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}"

    def start(self) -> Dashboard:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._bind())
        except BaseException as error:  # handed to start(), which raises it in the caller's thread
            self._error = error
            self._started.set()
            self._loop.close()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            if self._runner is not None:
                self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    async def _bind(self) -> None:
        app = create_app(self._settings, loopback_only=is_loopback(self.host), trace_link=self._trace_link,
                         spans=self._spans)
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=15, max_line_size=MAX_LINE_BYTES,
                                     max_field_size=MAX_FIELD_BYTES, max_headers=MAX_HEADERS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            if error.errno == errno.EADDRINUSE:
                raise ConfigError("dashboard", f"port {self.port} on {self.host} is in use") from None
            raise ConfigError("dashboard", f"cannot listen on {self.host}:{self.port}: {error.strerror}") from None
        server = site._server  # the bound socket says which port 0 became
        if isinstance(server, asyncio.base_events.Server) and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8082, *,
          trace_link: traces.TraceLink = traces.no_traces, spans: traces.SpanSource | None = None) -> Dashboard:
    """Start the dashboard for `settings`' task hub and queue; returns once it listens.

    Raises ConfigError (one line) when the port is taken. Any address other than loopback is logged as a warning:
    whoever reaches it can start, approve, terminate and purge.
    """
    if not is_loopback(host):
        log.warning("the dashboard listens on %s: anyone who reaches it can start, approve, terminate and purge "
                    "orchestrations", host)
    board = Dashboard(settings, host, port, trace_link, spans).start()
    log.info("dashboard on %s (task hub %r, %s)", board.url, settings.dts.taskhub, settings.servicebus.source)
    return board
