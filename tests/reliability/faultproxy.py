"""A fault-injecting TCP proxy on 127.0.0.1, for links that stall or reset rather than close.

Toxiproxy would fit, but it is a Go binary outside the venv; this is the few faults we need, in-process:

- latency + jitter per chunk, in order (a later chunk never overtakes an earlier one);
- a bandwidth cap per direction of each connection;
- `reset()`: every open connection gets an RST on both sides (SO_LINGER 0), as a NAT or load balancer does;
- `stall()`: every open connection goes half-open: bytes are read and silently dropped in both directions and no
  FIN ever reaches either side, even when the far end closes. That flow stays dead, as after a lost NAT entry or
  a pulled cable; new connections pass (`stall(new_too=True)` blackholes them as well until `heal()`).

It runs its own event loop on a daemon thread, so the test's SDK clients and subprocesses are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

CHUNK = 65536
T = TypeVar("T")


@dataclass
class Faults:
    """What the proxy does to bytes right now; change it at any time with `FaultProxy.set`."""

    latency: float = 0.0  # seconds added to each chunk, each direction
    jitter: float = 0.0  # plus uniform(0, jitter)
    bandwidth: float | None = None  # bytes/s per direction per connection; None: unlimited


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    stalled: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """`FaultProxy(upstream_port).start()` → listen on `.port`, forward to 127.0.0.1:upstream_port."""

    def __init__(self, upstream_port: int, *, seed: int = 1) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.faults = Faults()
        self.accepted = 0  # connections ever accepted (a reconnect shows here)
        self.resets = 0
        self._rng = random.Random(seed)
        self._conns: set[_Conn] = set()
        self._blackhole_new = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name=f"faultproxy-{self.upstream_port}",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ---------------------------------------------------------------------------------------------
    def set(self, *, latency: float = 0.0, jitter: float = 0.0, bandwidth: float | None = None) -> None:
        """Replace the current faults (no argument: a clean link again)."""
        self.faults = Faults(latency, jitter, bandwidth)

    def reset(self) -> int:
        """RST every open connection on both sides; returns how many were reset."""
        return self._call(self._reset_all)

    def stall(self, *, new_too: bool = False) -> int:
        """Make every open connection half-open (silent, never closed); returns how many."""
        return self._call(lambda: self._stall_all(new_too))

    def heal(self) -> None:
        """New connections pass again (stalled ones stay dead) and the faults are cleared."""
        self._blackhole_new = False
        self.set()

    @property
    def open_connections(self) -> int:
        return self._call(lambda: sum(not c.stalled for c in self._conns))

    # --- internals ------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the proxy's loop (the connection set is only touched there)."""
        assert self._loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop).result(10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()
        finally:
            ready.set()
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [task for conn in self._conns for task in conn.tasks]
        for conn in list(self._conns):
            for task in conn.tasks:
                task.cancel()
            _abort(conn.client, rst=False)
            _abort(conn.upstream, rst=False)
        if tasks:  # let the pumps unwind on this loop before it stops (no "coroutine ignored" warnings)
            await asyncio.wait(tasks, timeout=5)
        self._conns.clear()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _abort(c_writer, rst=True)
            return
        conn = _Conn(c_writer, u_writer, stalled=self._blackhole_new)
        self._conns.add(conn)
        conn.tasks = [asyncio.create_task(self._pump(conn, c_reader, u_writer, c_writer)),
                      asyncio.create_task(self._pump(conn, u_reader, c_writer, u_writer))]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._conns.discard(conn)

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    source: asyncio.StreamWriter) -> None:
        """Copy one direction through a queue, so latency delays bytes without slowing the reading side."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._deliver(conn, queue, writer))
        last_due = 0.0
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                if conn.stalled:  # half-open: swallow, and never pass on an end of stream
                    if not data:
                        await asyncio.Event().wait()  # until the proxy stops
                    continue
                if not data:
                    break
                f = self.faults
                due = time.monotonic() + f.latency + (self._rng.uniform(0, f.jitter) if f.jitter else 0.0)
                last_due = max(due, last_due)
                queue.put_nowait((last_due, data))
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(BaseException):
                await sender
            if not conn.stalled:
                _abort(writer, rst=False)
                _abort(source, rst=False)

    async def _deliver(self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes] | None],
                       writer: asyncio.StreamWriter) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            if conn.stalled:
                continue
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if conn.stalled:
                continue
            rate = self.faults.bandwidth
            step = len(data) if rate is None else max(1, int(rate / 20))  # ~50 ms worth at a time
            for i in range(0, len(data), step):
                if conn.stalled:
                    break
                try:
                    writer.write(data[i:i + step])
                    await writer.drain()
                except OSError:
                    return
                if rate is not None:
                    await asyncio.sleep(len(data[i:i + step]) / rate)

    def _reset_all(self) -> int:
        live = [c for c in self._conns if not c.stalled]
        for conn in live:
            conn.stalled = True  # the pumps stop touching it
            _abort(conn.client, rst=True)
            _abort(conn.upstream, rst=True)
            for task in conn.tasks:
                task.cancel()
        self.resets += len(live)
        return len(live)

    def _stall_all(self, new_too: bool) -> int:
        self._blackhole_new = new_too
        live = [c for c in self._conns if not c.stalled]
        for conn in live:
            conn.stalled = True
        return len(live)


async def _as_coro(fn: Callable[[], T]) -> T:
    return fn()


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close now; with `rst`, an RST instead of a FIN (SO_LINGER on, 0 s)."""
    sock = writer.get_extra_info("socket")
    if rst and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
