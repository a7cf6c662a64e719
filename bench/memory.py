"""Row 7: the listener process's peak resident set (VmHWM) while it drains a 10,000-message backlog.

The backlog is loaded while the listener is paused, so it faces all of it at once; its buffer holds at most
PREFETCH_COUNT of them, and MAX_CONCURRENT_MESSAGES are in flight.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bench.common import Dts, preload, run_prefix, start_messages, wait_until
from bench.listener_throughput import start_listener
from bench.stack import Backend, Broker


@dataclass(frozen=True)
class Memory:
    backlog: int
    idle_rss_mib: float  # after start-up and one message, before the backlog
    peak_rss_mib: float  # VmHWM after the backlog is drained
    seconds: float


async def measure(broker: Broker, backend: Backend, backlog: int, *, max_concurrent: int,
                  prefetch: int) -> Memory:
    dts = Dts(backend.port)
    try:
        listener = await start_listener(broker, backend, dts, max_concurrent=max_concurrent, prefetch=prefetch)
        try:
            idle = listener.rss_kib() / 1024
            prefix = run_prefix("mem")
            listener.pause()
            await preload(broker.connection_string, start_messages(prefix, backlog))
            loop = asyncio.get_running_loop()
            started = loop.time()
            listener.resume()
            await wait_until(broker, empty=True, timeout=300, interval=0.05)
            await dts.wait_for(prefix, backlog, timeout=60)
            seconds = loop.time() - started
            peak = listener.peak_rss_kib() / 1024
        finally:
            listener.stop()
    finally:
        await dts.close()
    backend.reset()
    return Memory(backlog, idle, peak, seconds)
