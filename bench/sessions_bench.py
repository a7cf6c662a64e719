"""Row 13: session mode beside the session-less listener, in the same run, and the sweep that chose the defaults of
MAX_CONCURRENT_SESSIONS and SESSION_IDLE_SECONDS.

Both listeners are `sbworker run --no-worker` with the same settings, one on a session-enabled queue. Each figure
is taken as rows 3 and 5 take theirs: starts/s from a pre-loaded backlog (the listener paused while it loads,
resumed when the clock starts; stopped when the broker holds nothing and DTS has every instance), and
publish → created latency at a steady rate, one message per send. The messages of a session-enabled run are spread
round-robin over SESSIONS sessions, so each session's are interleaved with the others', as many publishers' are.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.servicebus import ServiceBusMessage

from bench.common import (
    Dts,
    Percentiles,
    created_after_ms,
    percentiles,
    preload,
    run_prefix,
    send_paced,
    start_messages,
)
from bench.stack import QUEUE, SESSION_QUEUE, Backend, Broker, ListenerProcess, cpu_seconds

SESSIONS = 50


@dataclass(frozen=True)
class SessionRun:
    """One run of a listener, with sessions (`max_sessions` at once) or without (`max_sessions` 0)."""

    max_sessions: int
    idle_seconds: float
    n: int
    per_second: float  # from the backlog
    listener_cpu_s: float
    latency_ms: Percentiles | None = None  # at `rate`, when measured
    rate: float = 0.0

    @property
    def sessions(self) -> bool:
        return self.max_sessions > 0


def messages(prefix: str, n: int, *, sessions: bool) -> list[ServiceBusMessage]:
    found = start_messages(prefix, n)
    if sessions:
        for i, message in enumerate(found):
            message.session_id = f"{prefix}s{i % SESSIONS:02d}"
    return found


async def drained(broker: Broker, queue: str, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while (left := await asyncio.to_thread(broker.remaining, queue)) != 0:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{queue} still holds {left} message(s) after {timeout:.0f}s")
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def _started(broker: Broker, backend: Backend, dts: Dts, *, max_sessions: int, idle: float,
                   max_concurrent: int, prefetch: int) -> tuple[ListenerProcess, str]:
    """The listener, once it has turned a first message into an instance; and the queue it reads."""
    queue = SESSION_QUEUE if max_sessions else QUEUE
    extra = ({"SERVICEBUS_QUEUE": queue, "SERVICEBUS_SESSIONS": "true", "MAX_CONCURRENT_SESSIONS": str(max_sessions),
              "SESSION_IDLE_SECONDS": str(idle)} if max_sessions else {})
    listener = ListenerProcess(broker, backend, max_concurrent=max_concurrent, prefetch=prefetch, extra_env=extra)
    try:
        prefix = run_prefix("warm")
        await preload(broker.connection_string, messages(prefix, 1, sessions=bool(max_sessions)), queue)
        deadline = time.perf_counter() + 60
        while not await dts.has_at_least(prefix, 1):
            if not listener.alive() or time.perf_counter() > deadline:
                raise RuntimeError(f"the listener did not handle its warm-up message (exit {listener.proc.poll()})")
            await asyncio.sleep(0.05)
        await drained(broker, queue, 60)
    except BaseException:
        listener.stop()
        raise
    return listener, queue


async def measure(broker: Broker, backend: Backend, n: int, *, max_sessions: int, idle: float, max_concurrent: int,
                  prefetch: int, rate: float = 0.0, seconds: float = 0.0, timeout: float = 240.0) -> SessionRun:
    """Starts/s from an `n`-message backlog; with `rate`, then the latency of `rate` x `seconds` paced messages."""
    dts = Dts(backend.port)
    try:
        listener, queue = await _started(broker, backend, dts, max_sessions=max_sessions, idle=idle,
                                         max_concurrent=max_concurrent, prefetch=prefetch)
        try:
            prefix = run_prefix("ses" if max_sessions else "plain")
            backlog = messages(prefix, n, sessions=bool(max_sessions))
            listener.pause()
            await preload(broker.connection_string, backlog, queue)
            cpu0 = cpu_seconds(listener.pid)
            started = time.perf_counter()
            listener.resume()
            ended = max(await drained(broker, queue, timeout), await dts.wait_for(prefix, n, timeout=timeout))
            cpu = cpu_seconds(listener.pid) - cpu0
            await dts.verify(prefix, [str(m.message_id) for m in backlog])
            latency = await _latency(broker, dts, queue, rate, seconds, sessions=bool(max_sessions)) if rate else None
        finally:
            listener.stop()
    finally:
        await dts.close()
    backend.reset()
    return SessionRun(max_sessions, idle, n, n / (ended - started), cpu, latency, rate)


async def _latency(broker: Broker, dts: Dts, queue: str, rate: float, seconds: float, *, sessions: bool
                   ) -> Percentiles:
    """Publish → created, one message per send on an absolute schedule (as bench.latency, row 5)."""
    n = max(1, round(rate * seconds))
    prefix = run_prefix("sl" if sessions else "pl")
    paced = await send_paced(broker.connection_string, messages(prefix, n, sessions=sessions), rate, queue)
    await dts.wait_for(prefix, n, timeout=120)
    await drained(broker, queue, 60)
    return percentiles(created_after_ms(paced.published, await dts.instances(prefix)))


def describe(run: SessionRun) -> str:
    latency = f", p50 {run.latency_ms.p50:,.0f} ms (p95 {run.latency_ms.p95:,.0f})" if run.latency_ms else ""
    return f"{run.per_second:,.0f} starts/s{latency}"


def sweep_table(runs: list[SessionRun]) -> list[str]:
    """One line per setting: starts/s from the backlog, latency at the row's rate, CPU per message."""
    lines = ["| MAX_CONCURRENT_SESSIONS | SESSION_IDLE_SECONDS | starts/s | p50 / p95 ms | CPU ms/msg |",
             "| --- | --- | --- | --- | --- |"]
    for run in runs:
        latency = f"{run.latency_ms.p50:,.0f} / {run.latency_ms.p95:,.0f}" if run.latency_ms else "-"
        lines.append(f"| {run.max_sessions} | {run.idle_seconds:g} | {run.per_second:,.0f} | {latency} | "
                     f"{run.listener_cpu_s / run.n * 1000:.2f} |")
    return lines


SWEEP_SESSIONS = (8, 16, 32, 64)
SWEEP_IDLE = (0.25, 1.0)


async def sweep(broker: Broker, backend: Backend, n: int, *, rate: float, seconds: float, max_concurrent: int,
                prefetch: int, idle: float, max_sessions: int, say: Callable[[str], None]) -> list[SessionRun]:
    """MAX_CONCURRENT_SESSIONS at `idle`, then SESSION_IDLE_SECONDS at `max_sessions`: one run each."""
    cells = [(m, idle) for m in SWEEP_SESSIONS] + [(max_sessions, i) for i in SWEEP_IDLE if i != idle]
    runs = []
    for m, i in cells:
        runs.append(await measure(broker, backend, n, max_sessions=m, idle=i, max_concurrent=max_concurrent,
                                  prefetch=prefetch, rate=rate, seconds=seconds))
        say(f"   sessions sweep: {m} at once, {i:g} s idle: {describe(runs[-1])}")
    return runs


def main(argv: list[str]) -> int:
    """`python -m bench.sessions_bench`: the sweep alone (row 13's runs are part of `make bench`)."""
    from sbworker.core import config

    parser = argparse.ArgumentParser(prog="python -m bench.sessions_bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    broker, backend = Broker(), Backend()
    try:
        runs = asyncio.run(sweep(broker, backend, args.messages, rate=args.rate, seconds=args.seconds,
                                 max_concurrent=64, prefetch=100, idle=config.DEFAULT_SESSION_IDLE_SECONDS,
                                 max_sessions=config.DEFAULT_MAX_CONCURRENT_SESSIONS,
                                 say=lambda text: print(text, file=sys.stderr, flush=True)))
    finally:
        broker.close()
        backend.close()
    print("\n".join(sweep_table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
