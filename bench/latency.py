"""Row 5: publish → instance created, at a steady rate, through a running `sbworker run --no-worker`.

One message per send (as a real publisher would), paced on an absolute schedule so a slow send does not lower
the rate. The publish time is taken just before `send_messages`; the creation time is the DTS backend's own
`createdTimestamp` for the instance. Both are wall-clock times on this one machine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from azure.servicebus.aio import ServiceBusClient

from bench.common import Dts, Percentiles, percentiles, run_prefix, start_messages, wait_until
from bench.listener_throughput import start_listener
from bench.stack import QUEUE, Backend, Broker


@dataclass(frozen=True)
class Latency:
    rate: float  # messages/s asked for
    achieved_rate: float  # messages/s actually published
    seconds: float
    ms: Percentiles  # publish → instance created, milliseconds
    send_ms: Percentiles  # how long the publisher's send took (part of the above)


async def measure(broker: Broker, backend: Backend, *, rate: float, seconds: float, max_concurrent: int,
                  prefetch: int, trace_path: Path | None = None) -> Latency:
    dts = Dts(backend.port)
    try:
        listener = await start_listener(broker, backend, dts, max_concurrent=max_concurrent, prefetch=prefetch,
                                        trace_path=trace_path)
        try:
            n = max(1, round(rate * seconds))
            prefix = run_prefix("lat")
            messages = start_messages(prefix, n)
            published: dict[str, float] = {}
            send_s: list[float] = []
            async with ServiceBusClient.from_connection_string(broker.connection_string) as client, \
                    client.get_queue_sender(QUEUE) as sender:
                await sender.send_messages(start_messages(prefix + "w", 1))  # opens the link
                t0 = time.perf_counter() + 0.05
                for i, message in enumerate(messages):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    published[str(message.message_id)] = time.time()
                    before = time.perf_counter()
                    await sender.send_messages(message)
                    send_s.append(time.perf_counter() - before)
                elapsed = time.perf_counter() - t0
            await dts.wait_for(prefix, n + 1, timeout=60)
            await wait_until(broker, empty=True, timeout=60)
            states = await dts.instances(prefix)
        finally:
            listener.stop()
    finally:
        await dts.close()
    backend.reset()
    latencies = []
    for iid, sent in published.items():
        created = states[iid].createdTimestamp
        latencies.append((created.seconds + created.nanos / 1e9 - sent) * 1000)
    return Latency(rate, n / elapsed, elapsed, percentiles(latencies), percentiles([s * 1000 for s in send_s]))
