"""The dashboard on a thread and event loop of its own, so that `sbworker dev` and `sbworker dashboard` can run it
beside anything else (the listener's loop never waits for a page, and a slow page never delays a message).
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from sbworker.core.config import Settings
from sbworker.core.errors import ConfigError
from sbworker.core.net import is_loopback
from sbworker.core.site import ThreadedSite
from sbworker.dashboard import access as a
from sbworker.dashboard import traces
from sbworker.dashboard.app import create_app

log = logging.getLogger(__name__)



class Dashboard:
    """A running dashboard: `url`, `port`, and `stop()` (idempotent)."""

    def __init__(self, settings: Settings, host: str, port: int, trace_link: traces.TraceLink,
                 spans: traces.SpanSource | None = None, access: a.Access | None = None,
                 tls: ssl.SSLContext | None = None, taskhubs: Sequence[str] = ()) -> None:
        self.host = host
        self._taskhubs = list(taskhubs)
        self.access = access or a.Access()
        self._settings = settings
        self._trace_link = trace_link
        self._spans = spans
        self._tls = tls
        self._site = ThreadedSite(self._app, host, port, name="dashboard", keepalive_timeout=15, ssl_context=tls)

    @property
    def port(self) -> int:
        return self._site.port

    @property
    def url(self) -> str:
        shown = "localhost" if is_loopback(self.host) else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"{'https' if self._tls else 'http'}://{shown}:{self.port}"

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
        return create_app(self._settings, access=self.access, trace_link=self._trace_link, spans=self._spans,
                          taskhubs=self._taskhubs)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8082, *,
          trace_link: traces.TraceLink = traces.no_traces, spans: traces.SpanSource | None = None,
          access: a.Access | None = None, tls: tuple[Path, Path] | None = None,
          taskhubs: Sequence[str] = ()) -> Dashboard:
    """Start the dashboard for `settings`' task hub and queue; returns once it listens.

    `access` (sbworker/dashboard/access.py: `configure`) decides who may use it; without it only loopback is
    allowed, without credentials. `tls` is (certificate file, key file) to serve HTTPS. Raises ConfigError (one
    line) for a port in use, a non-loopback `host` that `access` does not allow, or unreadable TLS files.
    `taskhubs`: other task hubs to offer in a selector, besides `settings`' own.
    """
    access = access or a.configure(host=host, allow_remote=False, auth=None, token=None, extra_hosts=[],
                                   actions=None)
    if not is_loopback(host):
        log.warning("the dashboard listens on %s (%s authentication, %s): answering only to %s", host, access.mode,
                    "changes allowed" if access.actions else "read-only", ", ".join(access.allowed_hosts))
    board = Dashboard(settings, host, port, trace_link, spans, access, tls_context(tls), taskhubs).start()
    log.info("dashboard on %s (task hub %r, %s)", board.url, settings.dts.taskhub, settings.servicebus.source)
    return board


def tls_context(files: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(files[0]), str(files[1]))
    except (OSError, ssl.SSLError) as error:
        raise ConfigError("--tls-cert", f"cannot load {files[0]} with key {files[1]}: {error}") from None
    return context
