"""Row 6: `hello_cities` orchestrations completed/s by `sbworker run` (listener and DTS worker in one process).

Same shape as row 3 (warm up, pause, pre-load, resume), but the clock stops when DTS reports every instance
COMPLETED. Each hello_cities is three chained activities: four orchestrator episodes and three activity runs,
all through the co-hosted worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from durabletask.client import OrchestrationStatus

from bench.common import Dts, preload, run_prefix, start_messages
from bench.listener_throughput import start_listener
from bench.stack import Backend, Broker, cpu_seconds


@dataclass(frozen=True)
class EndToEnd:
    n: int
    seconds: float
    per_second: float
    process_cpu_s: float
    peak_rss_mib: float


async def measure(broker: Broker, backend: Backend, n: int, *, max_concurrent: int, prefetch: int,
                  timeout: float = 180.0) -> EndToEnd:
    dts = Dts(backend.port)
    try:
        service = await start_listener(broker, backend, dts, max_concurrent=max_concurrent, prefetch=prefetch,
                                       worker=True)
        try:
            prefix = run_prefix("e2e")
            service.pause()
            await preload(broker.connection_string, start_messages(prefix, n))
            cpu0 = cpu_seconds(service.pid)
            started = time.perf_counter()
            service.resume()
            ended = await dts.wait_for(prefix, n, status=OrchestrationStatus.COMPLETED, timeout=timeout,
                                       interval=0.1)
            cpu1 = cpu_seconds(service.pid)
            peak = service.peak_rss_kib() / 1024
        finally:
            service.stop()
    finally:
        await dts.close()
    backend.reset()
    seconds = ended - started
    return EndToEnd(n, seconds, n / seconds, cpu1 - cpu0, peak)
