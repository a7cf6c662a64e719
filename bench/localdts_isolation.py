"""Do other orchestrations keep their latency while a bad one is around? (issue 23 item 1, localdts side)

    python -m bench.localdts_isolation [--runs 60] [--repeats 3]

A durable ``python -m localdts`` and one worker process (``--work``); this process starts ``hello_cities`` one
after the other and measures each from start to completion, in three situations, interleaved per repeat:

- alone;
- while bad instances outgrow the work-item limit: one started every ``--bad-every`` seconds (default 2), each
  retrying an always-failing activity with an input of 80,000 "é" (480 KB once JSON-escaped), so each ends
  FAILED (WorkItemTooLarge) after about nine retries, having cost some 18 MiB of work items (history shipped to
  the worker and replayed there) on the same cores;
- while events of 256 KiB are raised, one every 0.2 s, at one instance until it refuses them (FAILED_PRECONDITION).

Before the bounds, the first of these stalled every other orchestration for minutes (issue 23).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.localdts_bench import TASKHUB, end, free_port, quiet, spawn

BIG_INPUT = "\u00e9" * 80_000


# --- the worker's extra workflows ------------------------------------------------------------------------------

def always_fails(ctx: Any, payload: Any) -> None:
    raise RuntimeError("always fails")


def retries_with_its_input(ctx: Any, payload: Any) -> Generator[Any, Any, Any]:
    from durabletask import task

    policy = task.RetryPolicy(first_retry_interval=timedelta(0), max_number_of_attempts=100)
    yield ctx.call_activity(always_fails, input=payload, retry_policy=policy)


def collects_events(ctx: Any, count: int) -> Generator[Any, Any, Any]:
    for _ in range(count):
        yield ctx.wait_for_external_event("data")
    return count


def work(endpoint: str) -> int:
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    from orchestrations import registry

    worker = DurableTaskSchedulerWorker(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                        secure_channel=False, logger=quiet())
    registry.register(worker)
    worker.add_orchestrator(retries_with_its_input)
    worker.add_orchestrator(collects_events)
    worker.add_activity(always_fails)
    worker.start()
    print("ready", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    worker.stop()
    return 0


# --- the driver ------------------------------------------------------------------------------------------------

def _background(kind: str, client: Any, stop: threading.Event, bad_every: float) -> None:
    import grpc

    if kind == "history":
        while not stop.wait(bad_every):
            client.schedule_new_orchestration("retries_with_its_input", input=BIG_INPUT)
    elif kind == "events":
        target = client.schedule_new_orchestration("collects_events", input=1000)
        while not stop.wait(0.2):
            with contextlib.suppress(grpc.RpcError):  # refused once the instance is full: the point
                client.raise_orchestration_event(target, "data", data="d" * (256 * 1024))


def run_once(kind: str, runs: int, bad_every: float) -> list[float]:
    """Seconds from start to completion of ``runs`` hello_cities, one after the other, beside ``kind``."""
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        endpoint = f"http://localhost:{port}"
        backend = spawn("-m", "localdts", "--port", str(port), "--data", str(Path(tmp) / "data"))
        worker = spawn("-m", "bench.localdts_isolation", "--work", endpoint)
        client = DurableTaskSchedulerClient(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                            secure_channel=False, logger=quiet())
        side = DurableTaskSchedulerClient(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                          secure_channel=False, logger=quiet())
        stop = threading.Event()
        noise = threading.Thread(target=_background, args=(kind, side, stop, bad_every), daemon=True)
        try:
            client.wait_for_orchestration_completion(client.schedule_new_orchestration("hello_cities"), timeout=60)
            noise.start()
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                state = client.wait_for_orchestration_completion(client.schedule_new_orchestration("hello_cities"),
                                                                 timeout=120)
                if state is None or state.runtime_status.name != "COMPLETED":
                    raise RuntimeError(f"hello_cities did not complete: {state}")
                times.append(time.perf_counter() - began)
        finally:
            stop.set()
            noise.join(5)
            client.close()
            side.close()
            end(worker)
            end(backend)
    return times


KINDS = {"alone": "alone", "history": "bad instances outgrowing 4 MiB, one every {bad_every:g} s",
         "events": "256 KiB events raised at one instance, one every 0.2 s"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.localdts_isolation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bad-every", type=float, default=2.0, metavar="SECONDS",
                        help="how often a bad instance is started in the second situation (default 2)")
    parser.add_argument("--work", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.work:
        return work(args.work)
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    for repeat in range(args.repeats):
        for kind in KINDS:
            times = run_once(kind, args.runs, args.bad_every)
            results[kind] += times
            say(f"  repeat {repeat + 1} {kind:8} median {statistics.median(times) * 1000:.0f} ms")
    print(f"localdts isolation, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.repeats} x {args.runs} hello_cities one after the other")
    print("| beside | median ms | p95 ms | max ms | vs alone (median) |")
    print("| --- | --- | --- | --- | --- |")
    alone = statistics.median(results["alone"])
    for kind, label in KINDS.items():
        t = sorted(results[kind])
        median = statistics.median(t)
        p95 = t[int(0.95 * (len(t) - 1))]
        print(f"| {label.format(bad_every=args.bad_every)} | {median * 1000:.0f} | {p95 * 1000:.0f} | "
              f"{t[-1] * 1000:.0f} | {median / alone:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
