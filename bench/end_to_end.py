"""Row 6: `hello_cities` orchestrations completed/s, co-hosted or split.

Co-hosted: `sbworker run` (listener and DTS worker in one process). Split: `sbworker run --no-worker` beside a
plain durabletask worker process (bench.plain_worker) running the same orchestrations and activities; the ratio
of the two is what co-hosting costs. Same shape as row 3 (warm up, pause the listener, pre-load, resume), but the
clock stops when DTS reports every instance COMPLETED. Each hello_cities is three chained activities: four
orchestrator episodes and three activity runs.

`sdk_ceiling` (row 11) takes Service Bus and sbworker out: the bench schedules the instances straight into DTS
with the async client, and bench.plain_worker runs them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from durabletask.client import OrchestrationStatus

from bench.common import ORCHESTRATION, Dts, preload, run_prefix, start_messages
from bench.listener_throughput import start_listener, start_replicas
from bench.stack import Backend, Broker, DelayProxy, ListenerProcess, cpu_seconds
from sbworker.core import clients, config

SCHEDULE_IN_FLIGHT = 64  # the ceiling's starts awaited at once, as the listener's defaults hold 64 messages


@dataclass(frozen=True)
class EndToEnd:
    n: int
    seconds: float
    per_second: float
    process_cpu_s: float  # all processes of the service (one co-hosted, two split)
    peak_rss_mib: float  # the largest of them
    split: bool = False
    orchestration: str = ORCHESTRATION
    delay_ms: float = 0.0  # added each way on the DTS connections by bench.delayproxy
    worker_env: tuple[tuple[str, str], ...] = ()  # the co-hosted worker's settings, when not its defaults
    backend_cpu_s: float = 0.0  # the DTS backend's, in the timed window
    replicas: int = 1  # co-hosted `sbworker run` processes (row 12)


async def measure(broker: Broker, backend: Backend, n: int, *, max_concurrent: int, prefetch: int,
                  timeout: float = 180.0, split: bool = False, orchestration: str = ORCHESTRATION,
                  proxy: DelayProxy | None = None, worker_env: dict[str, str] | None = None,
                  replicas: int | None = None) -> EndToEnd:
    """`proxy` delays the DTS connections only (the listener's and the worker's), or, with `replicas` (row 12:
    that many co-hosted `sbworker run` against the one broker and backend), the Service Bus connections too;
    `worker_env` sets the co-hosted worker's WORKER_* settings."""
    dts = Dts(backend.port)
    worker = (ListenerProcess(broker, backend, max_concurrent=max_concurrent, prefetch=prefetch, kind="plain_worker",
                              proxy=proxy, proxy_servicebus=False) if split else None)
    services: list[ListenerProcess] = []
    try:
        if replicas is not None:
            services = await start_replicas(broker, backend, dts, replicas, max_concurrent=max_concurrent,
                                            prefetch=prefetch, proxy=proxy, extra_env=worker_env, timeout=timeout)
        else:
            services = [await start_listener(broker, backend, dts, max_concurrent=max_concurrent, prefetch=prefetch,
                                             worker=not split, proxy=proxy, proxy_servicebus=False,
                                             extra_env=worker_env, timeout=timeout)]
        pids = [s.pid for s in services] + ([worker.pid] if worker else [])
        prefix = run_prefix("e2e")
        for service in services:
            service.pause()
        await preload(broker.connection_string, start_messages(prefix, n, orchestration))
        cpu0, backend0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(backend.pid)
        started = time.perf_counter()
        for service in services:
            service.resume()
        ended = await dts.wait_for(prefix, n, status=OrchestrationStatus.COMPLETED, timeout=timeout, interval=0.1)
        cpu1, backend1 = sum(cpu_seconds(p) for p in pids), cpu_seconds(backend.pid)
        peak = max(p.peak_rss_kib() for p in [*services, *([worker] if worker else [])]) / 1024
    finally:
        for service in services:
            service.stop()
        if worker is not None:
            worker.stop()
        await dts.close()
    backend.reset()
    seconds = ended - started
    return EndToEnd(n, seconds, n / seconds, cpu1 - cpu0, peak, split, orchestration,
                    proxy.delay * 1000 if proxy else 0.0, tuple(sorted((worker_env or {}).items())),
                    backend1 - backend0, replicas or 1)


async def sdk_ceiling(broker: Broker, backend: Backend, n: int, *, orchestration: str = ORCHESTRATION,
                      proxy: DelayProxy | None = None, worker_env: dict[str, str] | None = None,
                      timeout: float = 180.0) -> EndToEnd:
    """Workflows/s with the durabletask SDK alone: the async client schedules `n` instances (SCHEDULE_IN_FLIGHT
    at once) and a plain worker with `worker_env`'s settings runs them, both through `proxy`. The clock runs
    from the first start to the last completion; the worker has completed one instance before it starts."""
    dts = Dts(backend.port)
    target = proxy.dts_connection_string if proxy else backend.connection_string
    client = clients.dts_async_client(config.parse_dts(target))
    worker = ListenerProcess(broker, backend, max_concurrent=1, prefetch=0, kind="plain_worker", proxy=proxy,
                             proxy_servicebus=False, extra_env=worker_env)
    try:
        warm, prefix = run_prefix("warm"), run_prefix("sdk")
        await client.schedule_new_orchestration(orchestration, instance_id=warm)
        await dts.wait_for(warm, 1, status=OrchestrationStatus.COMPLETED, timeout=timeout, interval=0.1)
        cursor = iter(f"{prefix}{i:07d}" for i in range(n))

        async def starter() -> None:
            for instance_id in cursor:
                await client.schedule_new_orchestration(orchestration, instance_id=instance_id)

        bench0, cpu0, backend0 = time.process_time(), cpu_seconds(worker.pid), cpu_seconds(backend.pid)
        started = time.perf_counter()
        await asyncio.gather(*(starter() for _ in range(SCHEDULE_IN_FLIGHT)))
        ended = await dts.wait_for(prefix, n, status=OrchestrationStatus.COMPLETED, timeout=timeout,
                                   interval=0.1)
        bench1, cpu1, backend1 = time.process_time(), cpu_seconds(worker.pid), cpu_seconds(backend.pid)
        peak = worker.peak_rss_kib() / 1024
    finally:
        worker.stop()
        await client.close()
        await dts.close()
    backend.reset()
    seconds = ended - started
    # the bench process's CPU stands for the listener's: it is what scheduled the starts
    return EndToEnd(n, seconds, n / seconds, (cpu1 - cpu0) + (bench1 - bench0), peak, True, orchestration,
                    proxy.delay * 1000 if proxy else 0.0, tuple(sorted((worker_env or {}).items())),
                    backend1 - backend0)
