"""Row 3 and the sweep: a pre-loaded backlog of start messages, drained by `sbworker run --no-worker`.

The listener starts, connects and handles one warm-up message; then it is paused (SIGSTOP), the backlog is
loaded, and the clock starts when it is resumed (SIGCONT). Start-up (imports, connecting, the first gRPC
channel) is thus outside the figure, exactly as in a long-running service; a prefetching listener may hold up to
PREFETCH_COUNT messages in its buffer when the clock starts, as it would in steady state.

The clock stops when DTS answers that every instance exists *and* the broker holds no message of the run any
more (completed: dead-lettered or abandoned messages would show up in the DTS check or keep the count up).
Both checks ask the services, not the listener.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from durabletask.client import OrchestrationStatus

from bench.common import Dts, preload, run_prefix, start_messages, wait_until
from bench.stack import REPO_ROOT, Backend, Broker, DelayProxy, ListenerProcess, cpu_seconds


@dataclass(frozen=True)
class Throughput:
    max_concurrent: int
    prefetch: int
    n: int
    seconds: float
    per_second: float
    drained_s: float  # broker empty, seconds after resume
    listener_cpu_s: float  # CPU the listener used in the timed window
    broker_cpu_s: float
    backend_cpu_s: float
    peak_rss_mib: float
    kind: str = "sbworker"  # or a reference listener (bench.naive_sync, bench.naive_async)
    delay_ms: float = 0.0  # added each way by bench.delayproxy


async def start_listener(broker: Broker, backend: Backend, dts: Dts, *, max_concurrent: int, prefetch: int,
                         worker: bool = False, log_path: Path | None = None, trace_path: Path | None = None,
                         kind: str = "sbworker", proxy: DelayProxy | None = None, proxy_servicebus: bool = True,
                         extra_env: dict[str, str] | None = None, timeout: float = 60.0,
                         root: Path = REPO_ROOT) -> ListenerProcess:
    """Start `sbworker run` (or a reference listener) from the checkout at `root`, and return once it has turned a
    first message into an instance."""
    listener = ListenerProcess(broker, backend, max_concurrent=max_concurrent, prefetch=prefetch, worker=worker,
                               log_path=log_path, trace_path=trace_path, kind=kind, proxy=proxy,
                               proxy_servicebus=proxy_servicebus, extra_env=extra_env, root=root)
    try:
        prefix = run_prefix("warm")
        await preload(broker.connection_string, start_messages(prefix, 1))
        deadline = time.perf_counter() + timeout
        while not await dts.has_at_least(prefix, 1):
            if not listener.alive():
                raise RuntimeError(f"{kind} exited with code {listener.proc.returncode} during start-up")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{kind} did not handle its warm-up message")
            await asyncio.sleep(0.05)
        await wait_until(broker, empty=True, timeout=timeout)
    except BaseException:
        listener.stop()
        raise
    return listener


async def start_replicas(broker: Broker, backend: Backend, dts: Dts, count: int, *, max_concurrent: int,
                         prefetch: int, proxy: DelayProxy | None = None, extra_env: dict[str, str] | None = None,
                         timeout: float = 120.0) -> list[ListenerProcess]:
    """Start `count` co-hosted `sbworker run` at once, and return once each has attached its receiver and their
    warm-up workflows have completed (localbus deals messages round-robin over the links with credit, so each
    replica takes some of the 4 per replica)."""
    replicas = [ListenerProcess(broker, backend, max_concurrent=max_concurrent, prefetch=prefetch, worker=True,
                                proxy=proxy, extra_env=extra_env) for _ in range(count)]
    try:
        deadline = time.perf_counter() + timeout
        while await asyncio.to_thread(broker.receivers) < count:
            if not all(r.alive() for r in replicas):
                raise RuntimeError("a replica exited during start-up")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"fewer than {count} replicas attached a receiver")
            await asyncio.sleep(0.1)
        prefix = run_prefix("warm")
        await preload(broker.connection_string, start_messages(prefix, 4 * count))
        await dts.wait_for(prefix, 4 * count, status=OrchestrationStatus.COMPLETED, timeout=timeout)
        await wait_until(broker, empty=True, timeout=timeout)
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


async def measure(broker: Broker, backend: Backend, n: int, *, max_concurrent: int, prefetch: int,
                  timeout: float = 240.0, trace_path: Path | None = None, kind: str = "sbworker",
                  proxy: DelayProxy | None = None, extra_env: dict[str, str] | None = None) -> Throughput:
    dts = Dts(backend.port)
    try:
        listener = await start_listener(broker, backend, dts, max_concurrent=max_concurrent, prefetch=prefetch,
                                        trace_path=trace_path, kind=kind, proxy=proxy, extra_env=extra_env)
        try:
            prefix = run_prefix("run")
            messages = start_messages(prefix, n)
            listener.pause()
            await preload(broker.connection_string, messages)
            pids = (listener.pid, broker.pid, backend.pid)
            cpu0 = [cpu_seconds(p) for p in pids]
            started = time.perf_counter()
            listener.resume()
            drained = await wait_until(broker, empty=True, timeout=timeout)
            created = await dts.wait_for(prefix, n, timeout=timeout)
            ended = max(drained, created)
            cpu1 = [cpu_seconds(p) for p in pids]
            peak = listener.peak_rss_kib() / 1024
            await dts.verify(prefix, [str(m.message_id) for m in messages])
        finally:
            listener.stop()
    finally:
        await dts.close()
    backend.reset()
    seconds = ended - started
    return Throughput(max_concurrent, prefetch, n, seconds, n / seconds, drained - started,
                      cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2], peak, kind,
                      proxy.delay * 1000 if proxy else 0.0)
