"""`python -m bench` (`make bench`, about 20 minutes): every row, one process tree, bench/results/latest.json.

Processes: localbus, the in-memory DTS backend, each listener under test (`sbworker run` or a reference listener
written as the SDK docs would have it) and the delay proxy get their own interpreter; this process is the load
generator and the judge (it asks the broker and DTS, never the listener). Comparisons run in rounds with the order
rotated (bench.compare). All of them share the machine's cores, so the figures are what the listener gets while its
broker, its backend and its publisher run on the same two cores: a pessimistic set-up compared with a deployment.
`--write-readme` rewrites the README's generated Performance block from this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    breakdown,
    ceilings,
    compare,
    dashboard_bench,
    delayproxy,
    end_to_end,
    latency,
    listener_throughput,
    localdts_bench,
    memory,
    replicas,
    report,
    sessions_bench,
    workflows,
)
from bench.stack import Backend, Broker, DelayProxy
from sbworker.core import config

# The defaults the bench measures as "the listener" (rows 3-7, 9); see README, Performance, for why.
MAX_CONCURRENT = config.DEFAULT_MAX_CONCURRENT_MESSAGES
PREFETCH = config.DEFAULT_PREFETCH_COUNT

SWEEP_CONCURRENCY = (8, 16, 32, 64, 128)
SWEEP_PREFETCH = (0, 300)  # at the default concurrency, loopback only (PREFETCH is in the concurrency sweep)
PROXY_DELAY = delayproxy.DEFAULT_DELAY  # seconds added each way, row 9 and the sweep's second column
LISTENERS = ("sbworker", "naive_sync", "naive_async")


@dataclass(frozen=True)
class Sizes:
    messages: int  # row 3: sbworker and naive_sync, each repeat
    naive_async: int  # row 3 and 9: naive_async stalls near 120/s, so it gets fewer to keep the run short
    proxied: int  # row 9: sbworker
    proxied_naive: int  # row 9: each naive listener (about 100/s through the proxy)
    dts: int  # row 1
    servicebus: int  # row 2
    sweep: int  # per sweep cell
    latency_seconds: float  # row 5
    latency_rate: float
    e2e: int  # row 6
    backlog: int  # row 7
    repeats: int  # rows 1-4, 6, 9
    trace: int  # the breakdown's backlog run
    localdts_repeats: int  # row 8
    localdts_starts: int
    localdts_hellos: int
    dashboard_instances: int  # row 10
    dashboard_repeats: int
    workflows: int  # row 11, each run
    replicas: int  # row 12, each run
    sessions: int  # row 13: a backlog over sessions_bench.SESSIONS sessions, each listener, each repeat
    sessions_latency_seconds: float  # row 13: then paced at latency_rate


FULL = Sizes(messages=3000, naive_async=1000, proxied=3000, proxied_naive=600, dts=3000, servicebus=2000,
             sweep=2000, latency_seconds=20, latency_rate=50, e2e=400, backlog=10_000, repeats=3, trace=2000,
             localdts_repeats=3, localdts_starts=2000, localdts_hellos=200, dashboard_instances=100_000,
             dashboard_repeats=40, workflows=200, replicas=150, sessions=1000, sessions_latency_seconds=10)
QUICK = Sizes(messages=400, naive_async=150, proxied=400, proxied_naive=100, dts=400, servicebus=300, sweep=300,
              latency_seconds=4, latency_rate=50, e2e=50, backlog=1000, repeats=1, trace=300,
              localdts_repeats=1, localdts_starts=500, localdts_hellos=60, dashboard_instances=10_000,
              dashboard_repeats=10, workflows=40, replicas=30, sessions=300, sessions_latency_seconds=3)
LOCALDTS_KINDS = ["sdk", "memory", "durable"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run of every row")
    parser.add_argument("--messages", type=int, metavar="N", help="row 3 backlog per run (default 3,000)")
    parser.add_argument("--repeats", type=int, metavar="N", help="repeats of each comparison (default 3)")
    parser.add_argument("--skip-sweep", action="store_true",
                        help="skip the MAX_CONCURRENT x PREFETCH sweep and the worker's WORKER_THREADS sweep")
    parser.add_argument("--skip-workflows", action="store_true",
                        help="skip row 11 (workflows through 2 and 10 ms of DTS latency)")
    parser.add_argument("--skip-replicas", action="store_true",
                        help="skip row 12 (1, 2 and 4 replicas through 10 ms)")
    parser.add_argument("--skip-sessions", action="store_true",
                        help="skip row 13 (session mode beside the session-less listener) and its sweep")
    parser.add_argument("--skip-localdts", action="store_true",
                        help="skip row 8 (localdts against the SDK's in-memory backend)")
    parser.add_argument("--skip-dashboard", action="store_true",
                        help="skip row 10 (the dashboard at 100,000 instances in localdts)")
    parser.add_argument("--concurrency", type=int, default=MAX_CONCURRENT,
                        help=f"MAX_CONCURRENT_MESSAGES for rows 2-7, 9 (default {MAX_CONCURRENT})")
    parser.add_argument("--prefetch", type=int, default=PREFETCH,
                        help=f"PREFETCH_COUNT for rows 2-7, 9 (default {PREFETCH})")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/latest.json)")
    parser.add_argument("--write-readme", nargs="?", const=report.README, type=Path, metavar="PATH",
                        help="rewrite the block between the bench markers of README.md (or PATH) with this run")
    args = parser.parse_args(argv)
    if args.messages is not None and args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every row in one process tree; the results dict that report.table and report.save take."""
    sizes = QUICK if args.quick else FULL
    n = args.messages or sizes.messages
    repeats = args.repeats or sizes.repeats
    c, p = args.concurrency, args.prefetch
    results: dict[str, Any] = {"machine": report.machine(), "config": {"max_concurrent": c, "prefetch": p,
                                                                  "event_loop": config.event_loop(os.environ)},
                               "dts_in_flight": ceilings.DTS_IN_FLIGHT, "quick": args.quick, "repeats": repeats,
                               "proxy_delay_ms": PROXY_DELAY * 1000}
    results["load"] = {"start": os.getloadavg()[0]}
    began = time.perf_counter()
    broker, backend = Broker(), Backend()
    proxy = DelayProxy(broker, backend, PROXY_DELAY)
    try:
        def throughput(kind: str, count: int, via: DelayProxy | None = None, cc: int = c,
                       pp: int = p) -> Callable[[], Awaitable[listener_throughput.Throughput]]:
            return lambda: listener_throughput.measure(broker, backend, count, max_concurrent=cc, prefetch=pp,
                                                       kind=kind, proxy=via)

        say(f"1-4. loopback, {repeats} rotated round(s): raw DTS ({sizes.dts:,} starts, {ceilings.DTS_IN_FLIGHT} "
            f"in flight), raw Service Bus ({sizes.servicebus:,} msgs, one settle at a time), sbworker and "
            f"naive_sync ({n:,} starts each), naive_async ({sizes.naive_async:,})")
        loopback = await compare.rotated({
            "raw_dts": lambda: ceilings.raw_dts(backend, sizes.dts),
            "raw_servicebus": lambda: ceilings.raw_servicebus(broker, sizes.servicebus, max_concurrent=c,
                                                              prefetch=p, serial_settle=True),
            "sbworker": throughput("sbworker", n),
            "naive_sync": throughput("naive_sync", n),
            "naive_async": throughput("naive_async", sizes.naive_async),
        }, repeats, say)
        results["loopback"] = loopback
        say(f"   raw Service Bus with {c} settles awaited at once ({sizes.servicebus // 4:,} msgs, once)")
        results["raw_servicebus_concurrent"] = await ceilings.raw_servicebus(broker, sizes.servicebus // 4,
                                                                             max_concurrent=c, prefetch=p)
        results["ratios"] = report.ratios(loopback)

        say(f"9. through a {PROXY_DELAY * 1000:g} ms-each-way proxy, {repeats} rotated round(s): sbworker "
            f"({sizes.proxied:,}), naive_sync and naive_async ({sizes.proxied_naive:,} each)")
        results["proxied"] = await compare.rotated({
            "sbworker": throughput("sbworker", sizes.proxied, proxy),
            "naive_sync": throughput("naive_sync", sizes.proxied_naive, proxy),
            "naive_async": throughput("naive_async", sizes.proxied_naive, proxy),
        }, repeats, say)

        say(f"6. end to end, {repeats} rotated round(s): {sizes.e2e:,} hello_cities co-hosted (`sbworker run`) and "
            "split (`sbworker run --no-worker` + bench.plain_worker)")
        results["end_to_end"] = await compare.rotated({
            "cohosted": lambda: end_to_end.measure(broker, backend, sizes.e2e, max_concurrent=c, prefetch=p),
            "split": lambda: end_to_end.measure(broker, backend, sizes.e2e, max_concurrent=c, prefetch=p,
                                                split=True),
        }, repeats, say)

        if not args.skip_sweep:
            sweep = []
            concurrencies = SWEEP_CONCURRENCY if not args.quick else (c, 128)
            for via in (None, proxy):
                for cc in concurrencies:
                    say(f"   sweep: {cc} concurrent, prefetch {p}{' via proxy' if via else ''} ({sizes.sweep:,})")
                    sweep.append(await throughput("sbworker", sizes.sweep, via, cc, p)())
                    say(f"   {sweep[-1].per_second:,.0f} starts/s")
            for pp in SWEEP_PREFETCH if not args.quick else ():
                say(f"   sweep: {c} concurrent, prefetch {pp} ({sizes.sweep:,})")
                sweep.append(await throughput("sbworker", sizes.sweep, None, c, pp)())
                say(f"   {sweep[-1].per_second:,.0f} starts/s")
            results["sweep"] = sweep

        say(f"   breakdown: a traced sbworker run from a backlog ({sizes.trace:,}) and at "
            f"{sizes.latency_rate:g} msgs/s")
        results["breakdown"] = [
            await breakdown.measure(broker, backend, mode="backlog", n=sizes.trace, rate=sizes.latency_rate,
                                    max_concurrent=c, prefetch=p),
            await breakdown.measure(broker, backend, mode="paced", n=round(sizes.latency_rate * 6),
                                    rate=sizes.latency_rate, max_concurrent=c, prefetch=p),
        ]

        say(f"5. latency at {sizes.latency_rate:g} msgs/s for {sizes.latency_seconds:g} s")
        results["latency"] = await latency.measure(broker, backend, rate=sizes.latency_rate,
                                                   seconds=sizes.latency_seconds, max_concurrent=c, prefetch=p)
        lat = results["latency"].ms
        say(f"   p50 {lat.p50:.1f} ms, p95 {lat.p95:.1f} ms, p99 {lat.p99:.1f} ms")

        if not args.skip_workflows:
            say(f"11. workflows through DTS latency, {repeats} rotated round(s) of {sizes.workflows:,} per cell")
            results["workflows"] = await workflows.measure(broker, backend, sizes.workflows, repeats,
                                                           max_concurrent=c, prefetch=p,
                                                           sweep=not args.skip_sweep, say=say)
            results["workflows_summary"] = workflows.summary(results["workflows"])

        if not args.skip_replicas:
            say(f"12. replicas through {replicas.DELAY * 1000:g} ms, {repeats} rotated round(s) of "
                f"{sizes.replicas:,} hello_cities per run")
            results["replicas"] = await replicas.measure(broker, backend, sizes.replicas, repeats, max_concurrent=c,
                                                         prefetch=p, say=say)
            results["replicas_summary"] = replicas.summary(results["replicas"])

        if not args.skip_sessions:
            say(f"13. sessions: {sizes.sessions:,} starts over {sessions_bench.SESSIONS} sessions from a backlog, then "
                f"{sizes.latency_rate:g} msgs/s for {sizes.sessions_latency_seconds:g} s, beside the same without "
                f"sessions, {repeats} rotated round(s)")
            max_sessions, idle = config.DEFAULT_MAX_CONCURRENT_SESSIONS, config.DEFAULT_SESSION_IDLE_SECONDS

            def session_run(m: int, i: float) -> Callable[[], Awaitable[sessions_bench.SessionRun]]:
                return lambda: sessions_bench.measure(broker, backend, sizes.sessions, max_sessions=m, idle=i,
                                                      max_concurrent=c, prefetch=p, rate=sizes.latency_rate,
                                                      seconds=sizes.sessions_latency_seconds)

            results["sessions"] = await compare.rotated({"sessions": session_run(max_sessions, idle),
                                                         "plain": session_run(0, idle)}, repeats, say)
            if not args.skip_sweep:
                results["sessions_sweep"] = await sessions_bench.sweep(
                    broker, backend, sizes.sessions, rate=sizes.latency_rate, seconds=sizes.sessions_latency_seconds,
                    max_concurrent=c, prefetch=p, idle=idle, max_sessions=max_sessions, say=say)

        say(f"7. peak RSS with a {sizes.backlog:,}-message backlog")
        results["memory"] = await memory.measure(broker, backend, sizes.backlog, max_concurrent=c, prefetch=p)
        say(f"   {results['memory'].peak_rss_mib:.0f} MiB")
    finally:
        proxy.close()
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
    if not args.skip_dashboard:
        say(f"10. the dashboard and `sbworker list` at {sizes.dashboard_instances:,} instances in localdts "
            f"({sizes.dashboard_repeats} requests per page)")
        results["dashboard"] = await asyncio.to_thread(dashboard_bench.run, sizes.dashboard_instances,
                                                       sizes.dashboard_repeats, say)
        worst = results["dashboard"].worst
        say(f"   worst p95 {worst.p95_ms:.0f} ms ({worst.what})")
    results["total_seconds"] = time.perf_counter() - began
    results["load"]["end"] = os.getloadavg()[0]
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = asyncio.run(run(args))
    path = report.save(results, args.output)
    print(report.table(results))
    print(f"\nresults: {path}")
    if args.write_readme is not None:
        report.write_readme(args.write_readme, report.readme_block(results))
        print(f"README block rewritten: {args.write_readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
