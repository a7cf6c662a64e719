"""MAX_CONCURRENT_MESSAGES values against each other, in rotated rounds, on loopback and through the delay proxy.

`make bench`'s sweep runs each value once, and one run on this shared machine moves by up to 30%: a default is
chosen from rounds in which every value runs at nearly the same moment, in an order that rotates.

    python -m bench.concurrency --values 64,128 --rounds 5 [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bench import compare, listener_throughput
from bench.delayproxy import DEFAULT_DELAY as PROXY_DELAY
from bench.listener_throughput import Throughput
from bench.stack import Backend, Broker, DelayProxy
from sbworker.core.config import DEFAULT_PREFETCH_COUNT as PREFETCH


def _values(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if len(values) < 2 or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("two or more positive integers, comma-separated")
    return values


async def run(values: list[int], rounds: int, messages: int) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}; {messages:,} starts per "
          f"run, prefetch {PREFETCH}, {rounds} rotated rounds")
    broker, backend = Broker(), Backend()
    proxy = DelayProxy(broker, backend, PROXY_DELAY)
    try:
        for via in (None, proxy):
            where = f"{PROXY_DELAY * 1000:g} ms proxy" if via else "loopback"

            def contender(value: int, via: DelayProxy | None = via) -> Callable[[], Awaitable[Throughput]]:
                return lambda: listener_throughput.measure(broker, backend, messages, max_concurrent=value,
                                                           prefetch=PREFETCH, proxy=via)

            def say(line: str, where: str = where) -> None:
                print(f"  {where}: {line.strip()}", flush=True)

            results = await compare.rotated({str(value): contender(value) for value in values}, rounds, say)
            base = results[str(values[0])]
            for name, runs in results.items():
                rates = compare.spread(runs)
                cpu = compare.spread(runs, lambda run: run.listener_cpu_s / run.n * 1000)
                ratios = compare.Spread(tuple(run.per_second / ref.per_second for run, ref in zip(runs, base,
                                                                                                  strict=True)))
                print(f"{where}: MAX_CONCURRENT_MESSAGES={name}: {rates.text()} starts/s, {cpu.median:.2f} ms "
                      f"CPU/msg, {ratios.text(2, 'x')} against {values[0]}")
    finally:
        proxy.close()
        broker.close()
        backend.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=_values, default=[64, 128], help="comma-separated (default 64,128)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.values, args.rounds, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
