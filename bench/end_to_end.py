"""Row 6: `hello_cities` orchestrations completed/s, co-hosted or split.

Co-hosted: `sbworker run` (listener and DTS worker in one process). Split: `sbworker run --no-worker` beside a
plain durabletask worker process (bench.plain_worker) running the same orchestrations and activities; the ratio
of the two is what co-hosting costs. Same shape as row 3 (warm up, pause the listener, pre-load, resume), but the
clock stops when DTS reports every instance COMPLETED. Each hello_cities is three chained activities: four
orchestrator episodes and three activity runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from durabletask.client import OrchestrationStatus

from bench.common import Dts, preload, run_prefix, start_messages
from bench.listener_throughput import start_listener
from bench.stack import Backend, Broker, ListenerProcess, cpu_seconds


@dataclass(frozen=True)
class EndToEnd:
    n: int
    seconds: float
    per_second: float
    process_cpu_s: float  # all processes of the service (one co-hosted, two split)
    peak_rss_mib: float  # the largest of them
    split: bool = False


async def measure(broker: Broker, backend: Backend, n: int, *, max_concurrent: int, prefetch: int,
                  timeout: float = 180.0, split: bool = False) -> EndToEnd:
    dts = Dts(backend.port)
    worker = (ListenerProcess(broker, backend, max_concurrent=max_concurrent, prefetch=prefetch, kind="plain_worker")
              if split else None)
    try:
        service = await start_listener(broker, backend, dts, max_concurrent=max_concurrent, prefetch=prefetch,
                                       worker=not split)
        pids = [service.pid] + ([worker.pid] if worker else [])
        try:
            prefix = run_prefix("e2e")
            service.pause()
            await preload(broker.connection_string, start_messages(prefix, n))
            cpu0 = sum(cpu_seconds(p) for p in pids)
            started = time.perf_counter()
            service.resume()
            ended = await dts.wait_for(prefix, n, status=OrchestrationStatus.COMPLETED, timeout=timeout,
                                       interval=0.1)
            cpu1 = sum(cpu_seconds(p) for p in pids)
            peak = max(service.peak_rss_kib(), worker.peak_rss_kib() if worker else 0) / 1024
        finally:
            service.stop()
    finally:
        if worker is not None:
            worker.stop()
        await dts.close()
    backend.reset()
    seconds = ended - started
    return EndToEnd(n, seconds, n / seconds, cpu1 - cpu0, peak, split)
