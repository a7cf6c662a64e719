"""`GET /healthz` (the process is alive) and `GET /readyz` (receiver connected and DTS reachable).

A tiny asyncio HTTP responder: Container Apps probes need nothing more, and it adds no dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


class HealthServer:
    def __init__(self, port: int, readiness: ReadinessCheck, *, host: str = "0.0.0.0", cache_seconds: float = 2.0
                 ) -> None:
        self._port = port
        self._host = host
        self._readiness = readiness
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, bool]] | None = None
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("health endpoints on http://%s:%d/healthz and /readyz", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _checks(self) -> dict[str, bool]:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        try:
            checks = await asyncio.wait_for(self._readiness(), 5.0)
        except Exception:
            checks = {"ready_check": False}
        self._cached = (now, checks)
        return checks

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            body: dict[str, object]
            if path == "/healthz":
                status, body = 200, {"status": "alive"}
            elif path == "/readyz":
                checks = await self._checks()
                ok = all(checks.values())
                status, body = (200 if ok else 503), {"status": "ready" if ok else "not ready", **checks}
            else:
                status, body = 404, {"status": "not found"}
            payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
