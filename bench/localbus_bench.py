"""Throughput of localbus through the real (asyncio) azure-servicebus SDK, and the cost of its filters.

    python -m bench.localbus_bench [--messages 2000] [--store memory|sqlite|both]
    python -m bench.localbus_bench --filters
    python -m bench.localbus_bench --backlog [--sizes 10000,100000,1000000]

Measures messages/s for sending in batches and for receive + complete with concurrency 1 and 32 and prefetch 0
and 100. Concurrency C means one receiver asking for up to C messages at a time and completing them concurrently,
the way the listener processes a bounded number of messages in parallel. Not a test: it prints a table.

Finding: concurrent ``complete_message`` calls on one aio receiver each wait in the SDK's socket read, which
holds a lock for up to ``socket_timeout`` (0.2 s by default), so a round of 32 concurrent completes costs
~0.2 s whatever the broker does. ``get_queue_receiver(..., socket_timeout=0.02)`` removes that ceiling (the
same applies against the real service); the extra rows show it.

``--filters`` times SQL ``LIKE`` on a 10,000-character value against adversarial patterns of up to 100
characters (medians of 7; the plain ``.*`` translation localbus once used, on 200 and 400 characters, for
comparison), and how long the I/O loop takes to answer while a topic's 2,000 filters take seconds to
evaluate for one message.

``--backlog`` fills a store with N queued messages through the store's own code (``SqlitePersistence.insert``,
one transaction per 50,000), starts ``python -m localbus --data`` on it in a child process, and prints the
child's start-up time and RSS, and the receive + complete rate of 5,000 messages (aio SDK, prefetch 100, 32 at a
time), beside the same figures for a queue holding only those 5,000: medians (and range) of rotated rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from proton import Message

from bench.stack import free_port, proc_status_kib
from localbus import LocalBus, codec
from localbus.sqlfilter import LikePattern
from localbus.store import ACTIVE, SqlitePersistence

QUEUE = "bench"
BATCH = 100
PAYLOAD = '{"workflow": "approval", "input": {"order": 12345, "amount": 99.5, "customer": "c-0001"}}'


@dataclass
class Row:
    scenario: str
    store: str
    prefetch: int | None
    concurrency: int | None
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else float("inf")


async def _send(sb: ServiceBusClient, count: int, batch_size: int) -> float:
    async with sb.get_queue_sender(QUEUE) as sender:
        await sender.send_messages(ServiceBusMessage("warm-up"))  # link open is not part of the measurement
        started = time.perf_counter()
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            if n == 1:
                await sender.send_messages(ServiceBusMessage(PAYLOAD))
            else:
                await sender.send_messages([ServiceBusMessage(PAYLOAD) for _ in range(n)])
        return time.perf_counter() - started


async def _drain(receiver: ServiceBusReceiver) -> None:
    while batch := await receiver.receive_messages(max_message_count=100, max_wait_time=0.5):
        for m in batch:
            await receiver.complete_message(m)


async def _receive(sb: ServiceBusClient, count: int, prefetch: int, concurrency: int,
                   socket_timeout: float | None = None) -> float:
    extra: dict[str, Any] = {} if socket_timeout is None else {"socket_timeout": socket_timeout}
    async with sb.get_queue_receiver(QUEUE, prefetch_count=prefetch, **extra) as receiver:
        await _drain(receiver)  # the warm-up message, and opens the link before the clock starts
        async with sb.get_queue_sender(QUEUE) as sender:
            for start in range(0, count, BATCH):
                await sender.send_messages([ServiceBusMessage(PAYLOAD) for _ in range(min(BATCH, count - start))])
        done = 0
        started = time.perf_counter()
        while done < count:
            batch: list[ServiceBusReceivedMessage] = await receiver.receive_messages(
                max_message_count=min(concurrency, count - done), max_wait_time=5)
            if not batch:
                raise RuntimeError(f"only {done} of {count} messages arrived")
            await asyncio.gather(*(receiver.complete_message(m) for m in batch))
            done += len(batch)
        return time.perf_counter() - started


async def run(messages: int, stores: list[str]) -> list[Row]:
    rows: list[Row] = []
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp:
            bus = LocalBus(port=0, config_path=None, queues={QUEUE: {"LockDuration": "PT1M"}},
                           data_path=tmp if store == "sqlite" else None)
            with bus:
                async with ServiceBusClient.from_connection_string(bus.connection_string) as sb:
                    single = max(messages // 10, 50)
                    rows.append(Row("send, one message per call", store, None, 1, single,
                                    await _send(sb, single, 1)))
                    rows.append(Row(f"send, batches of {BATCH}", store, None, None, messages,
                                    await _send(sb, messages, BATCH)))
                    async with sb.get_queue_receiver(QUEUE) as receiver:
                        await _drain(receiver)
                    for prefetch in (0, 100):
                        for concurrency in (1, 32):
                            count = max(messages // 4, 100)
                            seconds = await _receive(sb, count, prefetch, concurrency)
                            rows.append(Row("receive + complete", store, prefetch, concurrency, count, seconds))
                        seconds = await _receive(sb, messages, prefetch, 32, socket_timeout=0.02)
                        rows.append(Row("  same, socket_timeout=0.02", store, prefetch, 32, messages, seconds))
    return rows


def render(rows: list[Row]) -> str:
    header = f"| {'scenario':<28} | {'store':<6} | {'prefetch':>8} | {'concurrency':>11} | {'messages':>8} " \
             f"| {'seconds':>7} | {'msg/s':>7} |"
    lines = [header, "|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(f"| {r.scenario:<28} | {r.store:<6} | {'' if r.prefetch is None else r.prefetch:>8} "
                     f"| {'' if r.concurrency is None else r.concurrency:>11} | {r.messages:>8} "
                     f"| {r.seconds:>7.2f} | {r.rate:>7.0f} |")
    return "\n".join(lines)


LIKE_CASES = [  # (pattern of at most 100 characters, 10,000-character value): every piece searched to the end
    ("%a%a%a%b", "a" * 10_000),
    ("%a%a%a%b%", "a" * 10_000),
    ("%" + "a%" * 48 + "b%", "a" * 10_000),
    ("%" + "a" * 97 + "b%", "a" * 10_000),
    ("%" + "a_" * 48 + "b%", "a" * 10_000),
    ("%" + "a_" * 48 + "b%", "ab" * 5_000),
    ("%" + "aab%" * 24 + "c%", "aab" * 3_333 + "a"),
    ("%" + "_" * 98 + "%", "x" * 10_000),
]


def _median_ms(fn: Any, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _naive(pattern: str) -> re.Pattern[str]:
    """The translation a user would write (and localbus once had): % → .*, _ → ."""
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern), re.DOTALL)


def like_rows() -> list[str]:
    lines = ["| pattern (length) | value | LIKE, ms (median of 7) |", "|---|---|---|"]
    for pattern, value in LIKE_CASES:
        matcher = LikePattern(pattern)
        ours = _median_ms(lambda m=matcher, v=value: m(v))
        shown = pattern if len(pattern) <= 24 else pattern[:21] + "..."
        lines.append(f"| `{shown}` ({len(pattern)}) | {len(value):,} chars | {ours:.3f} |")
    naive = _naive(LIKE_CASES[0][0])
    for n in (200, 400):
        ms = _median_ms(lambda v="a" * n: naive.fullmatch(v), repeats=1)
        lines.append(f"| `{LIKE_CASES[0][0]}` as `.*` regex (the old engine) | {n} chars | {ms:,.1f} |")
    return lines


def loop_during_heavy_routing() -> str:
    """Round trips to the I/O loop while one message's 2,000 filters are evaluated."""
    pattern = "%" + "a_" * 49 + "b%"
    subs = [{"Name": f"s{i}", "Rules": [{"Name": f"r{i}", "Properties": {"FilterType": "Sql", "SqlFilter": {
        "SqlExpression": f"p LIKE '{pattern}' AND n = {i}"}}}]} for i in range(2_000)]
    with LocalBus(port=0, config_path=None, topics={"heavy": {"Subscriptions": subs}}) as bus:
        from azure.servicebus import ServiceBusClient as SyncClient
        done = threading.Event()
        routed: list[float] = []

        def send() -> None:
            with SyncClient.from_connection_string(bus.connection_string) as sb, sb.get_queue_sender("heavy") as s:
                started = time.perf_counter()
                s.send_messages(ServiceBusMessage("x", application_properties={"p": "a" * 30_000, "n": -1}))
                routed.append(time.perf_counter() - started)
            done.set()
        thread = threading.Thread(target=send)
        thread.start()
        bus.wait_for(lambda b: b.routing_pending("heavy") == 1, timeout=60)
        pings = []
        while not done.is_set():
            started = time.perf_counter()
            bus.call(lambda b: None)
            pings.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        thread.join()
    return (f"one message against 2,000 LIKE filters (30,000-character property): acknowledged after "
            f"{routed[0]:.1f} s; meanwhile {len(pings)} round trips to the I/O loop, "
            f"median {statistics.median(pings):.2f} ms, max {max(pings):.1f} ms")


BACKLOG_RECEIVE = 5_000


def fill_store(data: Path, queue: str, count: int, first: int = 1) -> None:
    """``count`` messages in ``queue``'s store, written as the broker writes them (same rows, same blobs)."""
    store = SqlitePersistence(data, synchronous="OFF", min_free_bytes=0)
    template = codec.parse_message(bytes(Message(id="m", body=PAYLOAD).encode()))
    now = int(time.time() * 1000)
    key = queue.lower()
    try:
        for start in range(first, first + count, 50_000):
            stop = min(first + count, start + 50_000)
            for seq in range(start, stop):
                store.insert(key, seq, ACTIVE, 0, now, None, template.with_message_id(f"m{seq}").wire(0, []))
            store.set_last_sequence(key, stop - 1)
            store.commit()
    finally:
        store.close()


@dataclass
class BacklogRun:
    start_s: float
    rss_start: float
    rss_after: float
    rate: float


async def _receive_backlog(connection: str, count: int) -> float:
    async with ServiceBusClient.from_connection_string(connection) as sb, sb.get_queue_receiver(
            QUEUE, prefetch_count=100, socket_timeout=0.02) as receiver:
        done = 0
        started = 0.0
        while done < count:
            batch = await receiver.receive_messages(max_message_count=min(32, count - done), max_wait_time=10)
            if not batch:
                raise RuntimeError(f"only {done} of {count} messages arrived")
            if not started:
                started = time.perf_counter()  # from the first message on: link set-up is not measured
            await asyncio.gather(*(receiver.complete_message(m) for m in batch))
            done += len(batch)
        return (count - 32) / (time.perf_counter() - started)


def backlog_round(data: Path, config: Path) -> BacklogRun:
    """Start localbus on ``data`` in a child process; its start-up, RSS, and the rate of receiving 5,000."""
    port = free_port()
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "localbus", "--port", str(port), "--config", str(config),
                              "--data", str(data), "--min-free-mb", "0"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        connection = child.stdout.readline().strip()
        start_s = time.perf_counter() - started
        rss_start = proc_status_kib(child.pid, "VmRSS") / 1024
        rate = asyncio.run(_receive_backlog(connection, BACKLOG_RECEIVE))
        return BacklogRun(start_s, rss_start, proc_status_kib(child.pid, "VmRSS") / 1024, rate)
    finally:
        child.terminate()
        child.wait(60)


def backlog_rows(sizes: list[int], rounds: int = 3) -> list[str]:
    """One store per size, filled once; rounds rotate through the sizes (so that the machine's drift falls on all
    of them alike), each receiving 5,000 (the baseline's store is refilled)."""
    lines = ["| queued messages | start-up, s | RSS at start, MiB | RSS after, MiB | receive + complete, msg/s | "
             "vs. a queue of 5,000 |", "|---|---|---|---|---|---|"]
    all_sizes = [BACKLOG_RECEIVE, *sizes]
    runs: dict[int, list[BacklogRun]] = {size: [] for size in all_sizes}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "Config.json"
        config.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [
            {"Name": QUEUE, "Properties": {"LockDuration": "PT5M"}}]}]}}))
        stores = {size: Path(tmp) / f"data-{size}" for size in all_sizes}
        for size, data in stores.items():
            fill_store(data, QUEUE, size if size == BACKLOG_RECEIVE else size + (rounds - 1) * BACKLOG_RECEIVE)
        for n in range(rounds):
            for size in all_sizes if n % 2 == 0 else all_sizes[::-1]:
                if size == BACKLOG_RECEIVE and runs[size]:
                    fill_store(stores[size], QUEUE, size, first=len(runs[size]) * size + 1)
                runs[size].append(backlog_round(stores[size], config))
    print("\n".join(lines), flush=True)
    baseline: BacklogRun | None = None
    for size in all_sizes:
        run = BacklogRun(*(statistics.median(getattr(r, f) for r in runs[size])
                           for f in ("start_s", "rss_start", "rss_after", "rate")))
        baseline = baseline or run
        spread = f"{min(r.rate for r in runs[size]):,.0f}-{max(r.rate for r in runs[size]):,.0f}"
        lines.append(f"| {size:,} | {run.start_s:.1f} | {run.rss_start:.0f} | {run.rss_after:.0f} | "
                     f"{run.rate:,.0f} ({spread}) | {run.rate / baseline.rate:.2f}x |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.localbus_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per measurement (default: 2000)")
    parser.add_argument("--store", choices=["memory", "sqlite", "both"], default="both")
    parser.add_argument("--filters", action="store_true", help="time the filter engine instead (see above)")
    parser.add_argument("--backlog", action="store_true", help="cost of a long queue instead (see above)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="backlog sizes (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="backlog rounds per size (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.backlog:
        print(f"localbus backlog, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
        backlog_rows([int(n) for n in args.sizes.split(",")], args.rounds)
        return 0
    if args.filters:
        print(f"localbus filters, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
        print("\n".join(like_rows()))
        print(loop_during_heavy_routing())
        return 0
    stores = ["memory", "sqlite"] if args.store == "both" else [args.store]
    print(render(asyncio.run(run(args.messages, stores))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
