"""The dashboard on a thread and event loop of its own, so that `sbworker dev` and `sbworker dashboard` can run it
beside anything else (the listener's loop never waits for a page, and a slow page never delays a message).
"""

from __future__ import annotations

import errno
import logging

from aiohttp import web

from sbworker.core.config import Settings
from sbworker.core.errors import ConfigError
from sbworker.core.net import is_loopback
from sbworker.core.site import ThreadedSite
from sbworker.dashboard import traces
from sbworker.dashboard.app import create_app

log = logging.getLogger(__name__)



class Dashboard:
    """A running dashboard: `url`, `port`, and `stop()` (idempotent)."""

    def __init__(self, settings: Settings, host: str, port: int, trace_link: traces.TraceLink,
                 spans: traces.SpanSource | None = None) -> None:
        self.host = host
        self._settings = settings
        self._trace_link = trace_link
        self._spans = spans
        self._site = ThreadedSite(self._app, host, port, name="dashboard", keepalive_timeout=15)

    @property
    def port(self) -> int:
        return self._site.port

    @property
    def url(self) -> str:
        shown = "localhost" if is_loopback(self.host) else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}"

    def start(self) -> Dashboard:
        try:
            self._site.start()
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError("dashboard", f"port {self.port} on {self.host} is in use") from None
            raise ConfigError("dashboard", f"cannot listen on {self.host}:{self.port}: {error.strerror}") from None
        return self

    def stop(self) -> None:
        self._site.stop()

    async def _app(self) -> web.Application:
        return create_app(self._settings, loopback_only=is_loopback(self.host), trace_link=self._trace_link,
                          spans=self._spans)


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
