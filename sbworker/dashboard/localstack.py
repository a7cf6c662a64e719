"""The whole embedded stack in this process: localbus, localdts, the real listener + worker, and the dashboard.

`make screenshots` photographs a real run on it, and the dashboard's tests drive it, so both see the product as
`sbworker dev` runs it, each part on a free port. It needs the `local` extra (localbus, localdts).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from listener import service
from sbworker.core import config
from sbworker.core.config import Settings
from sbworker.dashboard.server import Dashboard, serve


@dataclass
class LocalStack:
    settings: Settings
    board: Dashboard
    servicebus_connection: str
    dts_port: int

    @property
    def url(self) -> str:
        return self.board.url


@contextmanager
def local_stack(*, env: dict[str, str] | None = None, dashboard_port: int = 0) -> Iterator[LocalStack]:
    """Start everything (memory only); stop it all on exit. `env` adds settings (e.g. a shorter approval window)."""
    from localbus import LocalBus
    from localdts import LocalDts

    bus = LocalBus(port=0).start()
    dts = LocalDts(port=0).start()
    stop_service: Callable[[], None] | None = None
    board: Dashboard | None = None
    try:
        settings = config.load({
            "SERVICEBUS_CONNECTION_STRING": bus.connection_string,
            "DTS_CONNECTION_STRING": f"Endpoint=http://localhost:{dts.port};Authentication=None",
            "HEALTH_PORT": "0",
            **(env or {}),
        })
        stop_service = _run_service(settings)
        board = serve(settings, port=dashboard_port)
        yield LocalStack(settings=settings, board=board, servicebus_connection=bus.connection_string,
                         dts_port=dts.port)
    finally:
        if board is not None:
            board.stop()
        if stop_service is not None:
            stop_service()
        dts.stop(grace=0)
        bus.stop()


def _run_service(settings: Settings, timeout: float = 30.0) -> Callable[[], None]:
    """`sbworker run` on a thread; returns once the listener is connected, and a function that stops it."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def on_listener(listener: Any) -> None:
        holder["listener"] = listener

    async def main() -> None:
        holder["loop"] = asyncio.get_running_loop()
        holder["stop"] = asyncio.Event()
        ready.set()
        await service.serve(settings, stop=holder["stop"], on_listener=on_listener)

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="sbworker-run", daemon=True)
    thread.start()
    ready.wait(timeout)
    deadline = time.monotonic() + timeout
    while True:
        listener = holder.get("listener")
        if listener is not None and listener.state.connected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the listener did not connect to localbus")
        time.sleep(0.05)

    def stop() -> None:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(30)

    return stop
