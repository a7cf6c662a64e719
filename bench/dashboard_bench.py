"""The dashboard and `sbworker list` against 100,000 instances in localdts: every page and filter, median and p95.

    python -m bench.dashboard_bench [--instances 100000] [--repeats 40] [--keep DIR]

A durable localdts store is filled through the store's own code (bench.localdts_history: copies of one real
completed hello_cities, 1% FAILED, 1% TERMINATED) with four orchestration names in turn and creation times spread
over the last 7 days. localdts and localbus each run in their own process; the dashboard runs in this one, on its
own thread, and is asked over HTTP, one request at a time, as a browser would (after one warm-up request each).

What a user would otherwise write is the SDK's own call, `get_all_orchestration_states`, which walks every page:
timed once, beside one page of `sbworker list --limit 50` (`sbworker.operations.monitor.list_instances`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from bench.localdts_bench import end
from bench.localdts_history import FILL_BATCH, template
from bench.stack import Broker, free_port
from localdts.store import InstanceRow, Store

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("hello_cities", "fan_out_fan_in", "approval_workflow", "workflow_with_retry")
SPREAD = timedelta(days=7)
TARGET_P95_MS = 300.0  # issue 26: every list page, filter and the overview


@dataclass(frozen=True)
class Row:
    what: str
    url: str
    median_ms: float
    p95_ms: float
    note: str = ""


def spread(base: InstanceRow, count: int) -> Iterator[InstanceRow]:
    """bench.localdts_history's synthetic instances, with four names and creation times over SPREAD."""
    from bench.localdts_history import synthetic

    newest = int(time.time() * 1_000_000)
    gap = int(SPREAD.total_seconds() * 1_000_000 / max(count, 1))
    for i, row in enumerate(synthetic(base, count, newest_us=newest)):
        created = newest - (count - i) * gap
        yield replace(row, name=NAMES[i % len(NAMES)], created_us=created, updated_us=created + 500,
                      completed_us=created + 500)


def fill(path: Path, count: int) -> float:
    began = time.perf_counter()
    base = template()
    store = Store(path, fsync=False)
    try:
        rows = spread(base, count)
        while batch := [row for _, row in zip(range(FILL_BATCH), rows, strict=False)]:
            store.insert_many(batch)
    finally:
        store.close()
    return time.perf_counter() - began


@contextmanager
def localdts(path: Path) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "localdts", "--port", str(port), "--data", str(path)], cwd=ROOT,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("Endpoint="):
            raise RuntimeError(f"localdts did not start on {path}")
        yield port
    finally:
        end(proc)


def timed(url: str, repeats: int) -> tuple[float, float]:
    """(median, p95) in ms of GET `url`, after one warm-up; any status but 200 stops the bench."""
    def get() -> float:
        began = time.perf_counter()
        with urlopen(url, timeout=60) as response:
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: HTTP {response.status}")
        return (time.perf_counter() - began) * 1000
    get()
    times = sorted(get() for _ in range(repeats))
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def older_link(url: str, pages: int) -> str:
    """The URL of the page `pages` "older" clicks after `url`."""
    import re
    from html import unescape

    for _ in range(pages):
        with urlopen(url, timeout=60) as response:
            found = re.search(r'href="(/instances\?[^"]*)" rel="next"', response.read().decode())
        if found is None:
            raise RuntimeError(f"no older page after {url}")
        url = url.split("/instances", 1)[0] + unescape(found.group(1))
    return url


DEAD_LETTERS = 50  # in the dead-letter queue while one in the middle is acted on


def dead_letter_rows(base: str, settings: Any, repeats: int) -> list[Row]:
    """Delete, then resubmit, the 25th of DEAD_LETTERS dead letters: the confirmed POST, timed."""
    import re
    from http.cookiejar import CookieJar
    from urllib.parse import urlencode
    from urllib.request import HTTPCookieProcessor, HTTPRedirectHandler, Request, build_opener

    from azure.servicebus import ServiceBusMessage

    from sbworker.core import clients

    queue = settings.servicebus.source.entity.name
    with clients.servicebus_sync_client(settings.servicebus) as sb:
        wanted = DEAD_LETTERS + 2 * repeats + 1
        with sb.get_queue_sender(queue) as sender:
            sender.send_messages([ServiceBusMessage(f"dead letter {n}") for n in range(wanted)])
        with sb.get_queue_receiver(queue) as receiver:
            moved = 0
            while moved < wanted:
                for message in receiver.receive_messages(max_message_count=100, max_wait_time=5):
                    receiver.dead_letter_message(message, reason="Bench", error_description="for the bench")
                    moved += 1

    class Stay(HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    browser = build_opener(HTTPCookieProcessor(CookieJar()), Stay())

    def middle() -> tuple[str, int]:
        with browser.open(base + "/queue", timeout=60) as response:
            text = response.read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', text)
        numbers = [int(n) for n in re.findall(r'<tr data-seq="(\d+)"', text)]
        assert token is not None and len(numbers) > DEAD_LETTERS // 2
        return token.group(1), numbers[DEAD_LETTERS // 2]

    def post(action: str, token: str, seq: int, confirm: bool) -> float:
        fields = {"seq": str(seq), "csrf_token": token, **({"confirmed": "yes"} if confirm else {})}
        request = Request(f"{base}/queue/dead-letters/{action}", data=urlencode(fields).encode(),
                          headers={"Origin": base}, method="POST")
        began = time.perf_counter()
        try:
            with browser.open(request, timeout=60) as response:
                response.read()
        except Exception as answer:  # the 303 the form answers with (not followed)
            if getattr(answer, "code", None) != 303:
                raise
        return (time.perf_counter() - began) * 1000

    rows = []
    for action in ("delete", "resubmit"):
        times = []
        for _ in range(repeats):
            token, seq = middle()
            post(action, token, seq, confirm=False)  # the confirmation page (it opens the links)
            times.append(post(action, token, seq, confirm=True))
        times.sort()
        rows.append(Row(f"dead letter {action}, the 25th of {DEAD_LETTERS} (confirmed POST)", "/queue",
                        statistics.median(times), times[int(0.95 * (len(times) - 1))]))
    return rows


def measure(dts_port: int, count: int, repeats: int) -> tuple[list[Row], dict[str, float]]:
    from durabletask.client import OrchestrationQuery

    from sbworker.core import clients, config
    from sbworker.dashboard import serve
    from sbworker.operations import monitor

    broker = Broker()
    try:
        settings = config.load({"SERVICEBUS_CONNECTION_STRING": broker.connection_string,
                                "DTS_CONNECTION_STRING": f"Endpoint=http://localhost:{dts_port};Authentication=None",
                                "HEALTH_PORT": "0"})
        board = serve(settings, port=0)
        try:
            base = f"http://127.0.0.1:{board.port}"
            six_hours = (datetime.now(UTC) - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
            pages = [
                ("list, newest 25", "/instances"),
                ("status FAILED", "/instances?status=FAILED"),
                ("status COMPLETED, created in the last 6 h", f"/instances?status=COMPLETED&from={six_hours}"),
                ("id prefix (1 in 16)", "/instances?prefix=a"),
                ("name (1 in 4, filtered here)", "/instances?name=approval_workflow"),
                ("name that matches none (1,000 read)", "/instances?name=no_such_orchestration"),
                ("search in id (1 in 256)", "/instances?q=ff"),
                ("100 per page", "/instances?size=100"),
                ("overview, any time", "/overview"),
                ("overview, last 24 h", "/overview?window=24h"),
            ]
            rows = [Row(what, url, *timed(base + url, repeats)) for what, url in pages]
            deep = older_link(base + "/instances", 40)
            rows.insert(1, Row("page 41 (after 40 older clicks)", deep[len(base):], *timed(deep, repeats)))
            rows += dead_letter_rows(base, settings, min(repeats, 20))
        finally:
            board.stop()
        cli: dict[str, float] = {}
        with clients.dts_client(settings.dts) as client:
            began = time.perf_counter()
            for _ in range(repeats):
                monitor.list_instances(client, None, 50)
            cli["list_ms"] = (time.perf_counter() - began) * 1000 / repeats
            began = time.perf_counter()
            everything = client.get_all_orchestration_states(OrchestrationQuery(max_instance_count=1000))
            cli["get_all_ms"] = (time.perf_counter() - began) * 1000
            cli["get_all_count"] = float(len(everything))
    finally:
        broker.close()
    return rows, cli


@dataclass(frozen=True)
class DashboardRun:
    instances: int
    repeats: int
    rows: list[Row]
    list_ms: float  # `sbworker list --limit 50`, mean per call
    get_all_ms: float  # the SDK's walk of every page, once
    get_all_count: int

    @property
    def worst(self) -> Row:
        return max(self.rows, key=lambda r: r.p95_ms)


def run(instances: int, repeats: int, say: Callable[[str], None], keep: Path | None = None) -> DashboardRun:
    work = keep or Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"dts-{instances}.sqlite3"
    try:
        if not path.exists():
            say(f"   filling {instances:,} instances into {path}")
            say(f"   filled in {fill(path, instances):.0f} s")
        with localdts(path) as port:
            rows, cli = measure(port, instances, repeats)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return DashboardRun(instances, repeats, rows, cli["list_ms"], cli["get_all_ms"], int(cli["get_all_count"]))


def describe(r: DashboardRun) -> str:
    return (f"{r.instances:,} instances in localdts (durable), {r.repeats} requests per figure, one at a time, after "
            "a warm-up; localdts and localbus in their own processes, the dashboard in the bench's")


def table(r: DashboardRun) -> list[str]:
    lines = ["| page | median ms | p95 ms | p95 within 300 ms |", "| --- | --- | --- | --- |"]
    for row in r.rows:
        lines.append(f"| {row.what} | {row.median_ms:.0f} | {row.p95_ms:.0f} | "
                     f"{'yes' if row.p95_ms <= TARGET_P95_MS else 'NO'} |")
    lines += ["", f"`sbworker list --limit 50` (one page of the query API): {r.list_ms:.0f} ms; what a script would "
                  f"otherwise write, the SDK's `get_all_orchestration_states` (every page, {r.get_all_count:,} "
                  f"instances): {r.get_all_ms:,.0f} ms ({r.get_all_ms / r.list_ms:,.0f}x)."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=40, help="requests per figure (after one warm-up)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep the filled store and reuse it")
    args = parser.parse_args(argv)
    result = run(args.instances, args.repeats, lambda line: print(line, file=sys.stderr, flush=True), args.keep)
    print(f"dashboard at {describe(result)}; {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print("\n".join(table(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
