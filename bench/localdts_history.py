"""localdts's cost by the size of its history: 0, 10k, 100k and 1M completed instances in the store.

    python -m bench.localdts_history [--sizes 0,10000,100000,1000000] [--keep DIR] [--repeats 200]

Each store is filled quickly through the store's own code (``Store.insert_many``) with copies of one real
completed ``hello_cities`` (run once, end to end, to get its row and history), 1% of them FAILED and 1%
TERMINATED. Then, per size, ``python -m localdts`` is started on it in its own process and measured from this
one, over gRPC with the SDK's client:

- start-up: from spawning the process to its connection string (the interpreter's own start included);
- RSS of the backend after start-up, and after the measurements;
- a start followed by a status read of the new instance (no worker: it stays PENDING), median and p95;
- a status read of a completed instance (read from the store), median and p95;
- the newest 25 (one ``QueryInstances`` call, ``maxInstanceCount=25``), without a filter and with status FAILED,
  and the 25 after the first 2,500 (the 101st call of a walk), median and p95.

``--keep DIR`` keeps the filled stores there and reuses them on the next run (filling 1M takes a few minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb

from bench.localdts_bench import TASKHUB, end, free_port, quiet, spawn
from localdts.queries import InstanceQuery
from localdts.store import InstanceRow, Store

FILL_BATCH = 20_000
SIZES = (0, 10_000, 100_000, 1_000_000)


# --- filling ---------------------------------------------------------------------------------------------------

def template() -> InstanceRow:
    """One real completed hello_cities (row and history), run end to end on a throwaway localdts."""
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    from localdts import LocalDts
    from orchestrations import registry

    with tempfile.TemporaryDirectory() as tmp, LocalDts(port=0, data_path=Path(tmp)) as dts:
        worker = DurableTaskSchedulerWorker(host_address=dts.endpoint, taskhub=TASKHUB, token_credential=None,
                                            secure_channel=False, logger=quiet())
        registry.register(worker)
        worker.start()
        client = DurableTaskSchedulerClient(host_address=dts.endpoint, taskhub=TASKHUB, token_credential=None,
                                            secure_channel=False, logger=quiet())
        try:
            iid = client.schedule_new_orchestration("hello_cities")
            client.wait_for_orchestration_completion(iid, timeout=60)
        finally:
            client.close()
            worker.stop()
        dts.stop()
        store = Store(Path(tmp))
        try:
            row = store.row(iid, history=True)
        finally:
            store.close()
    assert row is not None and row.status == pb.ORCHESTRATION_STATUS_COMPLETED
    return row


def synthetic(base: InstanceRow, count: int, *, seed: int = 7, newest_us: int | None = None
              ) -> Iterator[InstanceRow]:
    """``count`` copies of ``base`` with random ids, created 1 ms apart up to ``newest_us``; 1% FAILED,
    1% TERMINATED."""
    rng = random.Random(seed)
    newest = newest_us if newest_us is not None else int(time.time() * 1_000_000)
    failed = pb.TaskFailureDetails(errorType="Exception", errorMessage="synthetic failure").SerializeToString()
    for i in range(count):
        created = newest - (count - i) * 1000
        status, failure = pb.ORCHESTRATION_STATUS_COMPLETED, None
        if i % 100 == 1:
            status, failure = pb.ORCHESTRATION_STATUS_FAILED, failed
        elif i % 100 == 2:
            status = pb.ORCHESTRATION_STATUS_TERMINATED
        yield replace(base, instance_id=f"{rng.getrandbits(128):032x}", status=status, failure=failure,
                      created_us=created, updated_us=created + 500, completed_us=created + 500)


def fill(path: Path, base: InstanceRow, count: int, progress: Callable[[str], None] | None = None) -> float:
    """A store at ``path`` with ``count`` completed instances; seconds taken."""
    began = time.perf_counter()
    store = Store(path, fsync=False)
    try:
        rows = synthetic(base, count)
        done = 0
        while done < count:
            batch = [row for _, row in zip(range(FILL_BATCH), rows, strict=False)]
            store.insert_many(batch)
            done += len(batch)
            if progress is not None and done % 200_000 == 0:
                progress(f"  filled {done:,} of {count:,}")
    finally:
        store.close()
    return time.perf_counter() - began


# --- measuring -------------------------------------------------------------------------------------------------

def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Cost:
    size: int
    file_mib: float
    startup_s: float
    rss_start_mib: float
    rss_end_mib: float
    start_status_ms: tuple[float, float]
    completed_status_ms: tuple[float, float]
    newest_ms: tuple[float, float]
    newest_failed_ms: tuple[float, float]
    deep_page_ms: tuple[float, float]


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, p95) in milliseconds."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def measure(path: Path, size: int, completed_ids: list[str], repeats: int) -> Cost:
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    port = free_port()
    began = time.perf_counter()
    proc = spawn("-m", "localdts", "--port", str(port), "--data", str(path))  # back once it printed its endpoint
    try:
        startup = time.perf_counter() - began
        rss_start = _rss_mib(proc.pid)
        client = DurableTaskSchedulerClient(host_address=f"http://localhost:{port}", taskhub=TASKHUB,
                                            token_credential=None, secure_channel=False, logger=quiet())
        try:
            client.get_orchestration_state("warm-up")

            def start_and_read() -> None:
                iid = client.schedule_new_orchestration("hello_cities")
                client.get_orchestration_state(iid)
            start_status = _timed(start_and_read, repeats)
            picks = iter(random.Random(3).choices(completed_ids or ["none"], k=repeats))
            completed_status = _timed(lambda: client.get_orchestration_state(next(picks)), repeats)
            stub = client._stub  # one QueryInstances call: the SDK's get_all_orchestration_states walks every page

            def page(status: pb.OrchestrationStatus | None = None,
                     token: str | None = None) -> pb.QueryInstancesResponse:
                query = pb.InstanceQuery(maxInstanceCount=25, runtimeStatus=[status] if status is not None else [])
                if token is not None:
                    query.continuationToken.value = token
                response: pb.QueryInstancesResponse = stub.QueryInstances(pb.QueryInstancesRequest(query=query))
                return response
            newest = _timed(page, repeats)
            newest_failed = _timed(lambda: page(pb.ORCHESTRATION_STATUS_FAILED), repeats)
            token = None
            for _ in range(100):
                response = page(token=token)
                token = response.continuationToken.value if response.HasField("continuationToken") else None
            deep = _timed(lambda: page(token=token), repeats)
        finally:
            client.close()
        rss_end = _rss_mib(proc.pid)
    finally:
        end(proc)
    file_mib = sum(f.stat().st_size for f in path.parent.glob(path.name + "*")) / 2**20
    return Cost(size, file_mib, startup, rss_start, rss_end, start_status, completed_status, newest,
                newest_failed, deep)


def _stored_ids(path: Path, limit: int = 5000) -> list[str]:
    store = Store(path, fsync=False)
    try:
        return [row.instance_id for row in store.query(_newest(limit))]
    finally:
        store.close()


def _newest(count: int) -> InstanceQuery:
    return InstanceQuery(statuses=(pb.ORCHESTRATION_STATUS_COMPLETED,), created_from_us=None, created_to_us=None,
                         prefix=None, page_size=count, after=None, with_payloads=False)


# --- the table -------------------------------------------------------------------------------------------------

def _ms(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f} / {pair[1]:.2f}"


def table(costs: list[Cost]) -> list[str]:
    empty = next((c for c in costs if c.size == 0), None)
    lines = ["| completed instances | file MiB | start-up s | RSS MiB (start → end) | start + status ms "
             "(median / p95) | completed status ms | newest 25 ms | newest 25 FAILED ms | 25 after 2,500 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in costs:
        vs = ""
        if empty is not None and c is not empty:
            vs = f" ({c.start_status_ms[0] / empty.start_status_ms[0]:.2f}x)"
        lines.append(f"| {c.size:,} | {c.file_mib:,.0f} | {c.startup_s:.2f} | {c.rss_start_mib:.0f} → "
                     f"{c.rss_end_mib:.0f} | {_ms(c.start_status_ms)}{vs} | {_ms(c.completed_status_ms)} | "
                     f"{_ms(c.newest_ms)} | {_ms(c.newest_failed_ms)} | {_ms(c.deep_page_ms)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.localdts_history", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the filled stores in DIR and reuse them")
    parser.add_argument("--repeats", type=int, default=200, help="calls per latency figure")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    work = args.keep or Path(tempfile.mkdtemp(prefix="localdts-history-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        base = template()
        say(f"template: hello_cities, {len(base.history)} history events, "
            f"{sum(len(e) for e in base.history):,} bytes of history")
        costs = []
        for size in sizes:
            path = work / f"dts-{size}.sqlite3"
            if not path.exists():
                say(f"filling {size:,} completed instances into {path}")
                say(f"  filled in {fill(path, base, size, say):.0f} s")
            ids = _stored_ids(path)
            cost = measure(path, size, ids, args.repeats)
            say(f"  {size:,}: start-up {cost.startup_s:.2f} s, RSS {cost.rss_start_mib:.0f} MiB")
            costs.append(cost)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"localdts cost by history, {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.repeats} calls per "
          "latency figure, over gRPC with the SDK's client; no worker")
    print("\n".join(table(costs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
