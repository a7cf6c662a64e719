"""Row 5: publish → instance created, at a steady rate, through a running `sbworker run --no-worker`.

One message per send (as a real publisher would), paced on an absolute schedule so a slow send does not lower
the rate. The publish time is taken just before `send_messages`; the creation time is the DTS backend's own
`createdTimestamp` for the instance. Both are wall-clock times on this one machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Dts,
    Percentiles,
    created_after_ms,
    percentiles,
    run_prefix,
    send_paced,
    start_messages,
    wait_until,
)
from bench.listener_throughput import start_listener
from bench.stack import Backend, Broker


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
            paced = await send_paced(broker.connection_string, start_messages(prefix, n), rate,
                                     opening=start_messages(prefix + "w", 1)[0])
            await dts.wait_for(prefix, n + 1, timeout=60)
            await wait_until(broker, empty=True, timeout=60)
            states = await dts.instances(prefix)
        finally:
            listener.stop()
    finally:
        await dts.close()
    backend.reset()
    return Latency(rate, n / paced.elapsed, paced.elapsed, percentiles(created_after_ms(paced.published, states)),
                   percentiles([s * 1000 for s in paced.send_s]))
