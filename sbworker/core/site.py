"""An aiohttp application served on a thread and event loop of its own: the health endpoints and the dashboard.

Neither may wait for, or hold up, the loop that handles messages: a flood of probes, a slow page or a client
that sends a 64 KiB header is aiohttp's to refuse on its own loop. Only aiohttp's public API is used (the bound
port of `port=0` comes from `AppRunner.addresses`).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

# Request limits for a server nobody should send much to: 8 KiB request lines and header fields, 64 headers.
# RequestHandler settings, passed flat: given `handler_args=`, aiohttp 3.14 drops them all (with a warning on
# every connection) and serves with its defaults.
LIMITS: dict[str, Any] = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 64}


class ThreadedSite:
    """`build` makes the application on the site's own loop (so what it creates belongs to that loop)."""

    def __init__(self, build: Callable[[], Awaitable[web.Application]], host: str, port: int, *, name: str,
                 keepalive_timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._build = build
        self._keepalive = keepalive_timeout
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._bound = threading.Event()
        self._error: BaseException | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self) -> int:
        """Serve; returns the bound port once listening, or raises what binding raised (OSError for a busy port)."""
        self._thread.start()
        self._bound.wait()
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (idempotent); connections still open are closed."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        elif self._thread.ident is None and not self._loop.is_closed():  # never started
            self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._bind())
        except BaseException as error:  # handed to start(), which raises it in the caller's thread
            self._error = error
            self._bound.set()
            self._loop.close()
            return
        self._bound.set()
        try:
            self._loop.run_forever()
        finally:
            if self._runner is not None:
                self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    async def _bind(self) -> None:
        self._runner = web.AppRunner(await self._build(), access_log=None, keepalive_timeout=self._keepalive,
                                     **LIMITS)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl).start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])
