"""`python -m bench` (`make bench`): every row, one process tree, one table, bench/results/latest.json.

Processes: localbus, the in-memory DTS backend and each `sbworker run` get their own interpreter; this process
is the load generator and the judge (it asks the broker and DTS, never the listener). All of them share the
machine's cores, so the figures are what the listener gets while its broker, its backend and its publisher run on
the same two cores — a pessimistic set-up compared with a deployment, where they are separate machines.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ceilings, end_to_end, latency, listener_throughput, localdts_bench, memory, report
from bench.stack import Backend, Broker

# The defaults the bench measures as "the listener" (rows 3, 5, 6, 7); see README, Performance, for why.
MAX_CONCURRENT = 32
PREFETCH = 100

SWEEP_CONCURRENCY = (1, 8, 32, 128)
SWEEP_PREFETCH = (0, 100)


@dataclass(frozen=True)
class Sizes:
    messages: int  # row 3
    dts: int  # row 1
    servicebus: int  # row 2
    sweep: int  # per sweep cell
    latency_seconds: float  # row 5
    latency_rate: float
    e2e: int  # row 6
    backlog: int  # row 7
    localdts_repeats: int  # row 8
    localdts_starts: int
    localdts_hellos: int


FULL = Sizes(messages=5000, dts=5000, servicebus=2000, sweep=2000, latency_seconds=20, latency_rate=50,
             e2e=500, backlog=10_000, localdts_repeats=3, localdts_starts=2000, localdts_hellos=200)
QUICK = Sizes(messages=500, dts=500, servicebus=300, sweep=200, latency_seconds=4, latency_rate=50, e2e=50,
              backlog=1000, localdts_repeats=1, localdts_starts=500, localdts_hellos=60)
LOCALDTS_KINDS = ["sdk", "memory", "durable"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every row (~1 min)")
    parser.add_argument("--messages", type=int, metavar="N", help="row 3 backlog (default 5,000)")
    parser.add_argument("--skip-sweep", action="store_true", help="skip the MAX_CONCURRENT x PREFETCH sweep")
    parser.add_argument("--skip-localdts", action="store_true",
                        help="skip row 8 (localdts against the SDK's in-memory backend)")
    parser.add_argument("--concurrency", type=int, default=MAX_CONCURRENT,
                        help=f"MAX_CONCURRENT_MESSAGES for rows 2, 3, 5-7 (default {MAX_CONCURRENT})")
    parser.add_argument("--prefetch", type=int, default=PREFETCH,
                        help=f"PREFETCH_COUNT for rows 2, 3, 5-7 (default {PREFETCH})")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/latest.json)")
    args = parser.parse_args(argv)
    if args.messages is not None and args.messages < 1:
        parser.error("--messages must be at least 1")
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    n = args.messages or sizes.messages
    c, p = args.concurrency, args.prefetch
    results: dict[str, Any] = {"machine": report.machine(), "config": {"max_concurrent": c, "prefetch": p},
                               "dts_in_flight": ceilings.DTS_IN_FLIGHT, "quick": args.quick}
    began = time.perf_counter()
    broker, backend = Broker(), Backend()
    try:
        say(f"1. raw DTS ceiling ({sizes.dts:,} starts, {ceilings.DTS_IN_FLIGHT} in flight)")
        results["raw_dts"] = await ceilings.raw_dts(backend, sizes.dts)
        say(f"   {results['raw_dts'].per_second:,.0f} starts/s")

        say(f"2. raw Service Bus ceiling ({sizes.servicebus:,} msgs, {c} concurrent, prefetch {p})")
        results["raw_servicebus"] = await ceilings.raw_servicebus(broker, sizes.servicebus, max_concurrent=c,
                                                                  prefetch=p)
        results["raw_servicebus_serial"] = await ceilings.raw_servicebus(broker, sizes.servicebus,
                                                                         max_concurrent=c, prefetch=p,
                                                                         serial_settle=True)
        say(f"   {results['raw_servicebus'].per_second:,.0f} msgs/s concurrent settles, "
            f"{results['raw_servicebus_serial'].per_second:,.0f} msgs/s one settle at a time")

        say(f"3. listener throughput ({n:,} starts, {c} concurrent, prefetch {p})")
        results["listener"] = await listener_throughput.measure(broker, backend, n, max_concurrent=c, prefetch=p)
        say(f"   {results['listener'].per_second:,.0f} starts/s")

        sb_best = max(results["raw_servicebus"].per_second, results["raw_servicebus_serial"].per_second)
        ceiling = min(results["raw_dts"].per_second, sb_best)
        results["ratio"] = {
            "value": results["listener"].per_second / ceiling,
            "ceiling": ceiling,
            "ceiling_is": "raw DTS" if results["raw_dts"].per_second <= sb_best else "raw Service Bus (best shape)",
            # One event loop doing both SDKs' work per message can reach at most this (their costs add up):
            "sdk_serial": 1 / (1 / results["raw_dts"].per_second + 1 / sb_best),
        }
        results["ratio"]["vs_sdk_serial"] = results["listener"].per_second / results["ratio"]["sdk_serial"]

        if not args.skip_sweep:
            sweep = []
            for cc in SWEEP_CONCURRENCY:
                for pp in SWEEP_PREFETCH:
                    say(f"   sweep: {cc} concurrent, prefetch {pp} ({sizes.sweep:,} starts)")
                    cell = await listener_throughput.measure(broker, backend, sizes.sweep, max_concurrent=cc,
                                                             prefetch=pp)
                    say(f"   {cell.per_second:,.0f} starts/s")
                    sweep.append(cell)
            results["sweep"] = sweep

        say(f"5. latency at {sizes.latency_rate:g} msgs/s for {sizes.latency_seconds:g} s")
        results["latency"] = await latency.measure(broker, backend, rate=sizes.latency_rate,
                                                   seconds=sizes.latency_seconds, max_concurrent=c, prefetch=p)
        lat = results["latency"].ms
        say(f"   p50 {lat.p50:.1f} ms, p95 {lat.p95:.1f} ms, p99 {lat.p99:.1f} ms")

        say(f"6. end to end: {sizes.e2e:,} hello_cities through `sbworker run` (listener + worker)")
        results["end_to_end"] = await end_to_end.measure(broker, backend, sizes.e2e, max_concurrent=c, prefetch=p)
        say(f"   {results['end_to_end'].per_second:,.1f} completed/s")

        say(f"7. peak RSS with a {sizes.backlog:,}-message backlog")
        results["memory"] = await memory.measure(broker, backend, sizes.backlog, max_concurrent=c, prefetch=p)
        say(f"   {results['memory'].peak_rss_mib:.0f} MiB")
    finally:
        broker.close()
        backend.close()

    if not args.skip_localdts:  # after the stack is gone: these backends get the machine to themselves
        say(f"8. localdts against the SDK's in-memory backend ({sizes.localdts_repeats} repeat(s) of "
            f"{sizes.localdts_starts:,} starts and {sizes.localdts_hellos:,} hello_cities per backend)")
        comparison = await asyncio.to_thread(localdts_bench.measure, LOCALDTS_KINDS, sizes.localdts_repeats,
                                             sizes.localdts_starts, sizes.localdts_hellos, say)
        results["localdts"] = comparison
        results["localdts_vs_sdk"] = {k: comparison.ratio(k) for k in LOCALDTS_KINDS if k != "sdk"}
        durable = comparison.ratio("durable")
        if durable is not None:
            say(f"   durable: {durable.starts_per_s:.2f}x starts/s, {durable.hellos_per_s:.2f}x hello_cities/s")
    results["total_seconds"] = time.perf_counter() - began
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = asyncio.run(run(args))
    path = report.save(results, args.output)
    print(report.table(results))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
