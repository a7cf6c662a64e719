"""localdts against the SDK's plain in-memory backend, in one run: starts/s and completed ``hello_cities``/s.

    python -m bench.localdts_bench [--repeats 3] [--starts 1000] [--hellos 200]

Each backend runs in its own process (this script with ``--serve``), the worker in another (``--work``), and
this process drives the load, as ``make bench`` does. Figures are medians of the repeats, and the fsync cost is
durable with fsync against durable without it (``synchronous=FULL`` against ``NORMAL``: both survive kill -9,
only the first a power cut).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKHUB = "default"
KINDS = {
    "sdk": "SDK in-memory backend (create_test_backend)",
    "memory": "localdts --memory",
    "durable": "localdts durable (fsync each commit)",
    "nofsync": "localdts durable, no fsync",
}


# --- the child processes ---------------------------------------------------------------------------------------

def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def serve(kind: str, port: int, data: Path) -> int:
    if kind == "sdk":
        from durabletask.testing import create_test_backend

        backend = create_test_backend(port=port)
        print("ready", flush=True)
        _wait_for_signal()
        backend.stop(grace=0)
        return 0
    from localdts import LocalDts

    dts = LocalDts(port=port, data_path=None if kind == "memory" else data, fsync=kind != "nofsync").start()
    print("ready", flush=True)
    _wait_for_signal()
    dts.stop()
    return 0


def work(endpoint: str) -> int:
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    from orchestrations import registry

    worker = DurableTaskSchedulerWorker(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                        secure_channel=False, log_handler=logging.NullHandler())
    registry.register(worker)
    worker.start()
    print("ready", flush=True)
    _wait_for_signal()
    worker.stop()
    return 0


# --- the driver ------------------------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "bench.localdts_bench", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _starts(endpoint: str, count: int, name: str, in_flight: int = 64) -> tuple[list[str], float]:
    """Start ``count`` instances with the async client, ``in_flight`` at a time; (ids, seconds)."""
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

    client = AsyncDurableTaskSchedulerClient(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                             secure_channel=False, log_handler=logging.NullHandler())
    gate = asyncio.Semaphore(in_flight)
    await client.schedule_new_orchestration(name)  # warm the channel up

    async def one() -> str:
        async with gate:
            return await client.schedule_new_orchestration(name)
    began = time.perf_counter()
    ids = await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - began
    await client.close()
    return list(ids), elapsed


def _wait_all(endpoint: str, ids: list[str]) -> None:
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient
    from durabletask.client import OrchestrationStatus

    client = DurableTaskSchedulerClient(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                        secure_channel=False, log_handler=logging.NullHandler())
    for iid in ids:
        state = client.wait_for_orchestration_completion(iid, timeout=300)
        if state is None or state.runtime_status != OrchestrationStatus.COMPLETED:
            raise RuntimeError(f"{iid} did not complete: {state}")
    client.close()


@dataclass
class Figures:
    starts_per_s: float
    hellos_per_s: float


def run_once(kind: str, starts: int, hellos: int) -> Figures:
    """One repeat: starts/s on a fresh backend, then hello_cities/s on another fresh one with a worker."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        endpoint = f"http://localhost:{port}"
        backend = _spawn("--serve", kind, str(port), str(Path(tmp) / "starts"))
        try:
            _, start_seconds = asyncio.run(_starts(endpoint, starts, "hello_cities"))
        finally:
            _end(backend)

        port = _free_port()
        endpoint = f"http://localhost:{port}"
        backend = _spawn("--serve", kind, str(port), str(Path(tmp) / "hellos"))
        try:
            worker = _spawn("--work", endpoint)
            try:
                began = time.perf_counter()
                ids, _ = asyncio.run(_starts(endpoint, hellos, "hello_cities"))
                _wait_all(endpoint, ids)
                hello_seconds = time.perf_counter() - began
            finally:
                _end(worker)
        finally:
            _end(backend)
    return Figures(starts / start_seconds, hellos / hello_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.localdts_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--starts", type=int, default=1000, help="instances started for starts/s")
    parser.add_argument("--hellos", type=int, default=200, help="hello_cities run to completion")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--work", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
    if args.work:
        return work(args.work)

    kinds = [k for k in args.kinds.split(",") if k]
    results: dict[str, list[Figures]] = {k: [] for k in kinds}
    for repeat in range(args.repeats):  # interleaved, so that drift on a shared machine hits every backend
        for kind in kinds:
            results[kind].append(run_once(kind, args.starts, args.hellos))
            f = results[kind][-1]
            print(f"  repeat {repeat + 1} {kind:8} {f.starts_per_s:7.0f} starts/s {f.hellos_per_s:6.1f} hello/s",
                  file=sys.stderr, flush=True)

    medians = {k: Figures(statistics.median(f.starts_per_s for f in v), statistics.median(f.hellos_per_s for f in v))
               for k, v in results.items()}
    print(f"localdts bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; medians of {args.repeats}; {args.starts} starts "
          f"(async client, 64 in flight), {args.hellos} hello_cities (one worker process)")
    base = medians.get("sdk")
    print("| backend | starts/s | vs SDK | completed hello_cities/s | vs SDK |\n| --- | --- | --- | --- | --- |")
    for kind, f in medians.items():
        s_ratio = f"{f.starts_per_s / base.starts_per_s:.2f}x" if base else "-"
        h_ratio = f"{f.hellos_per_s / base.hellos_per_s:.2f}x" if base else "-"
        print(f"| {KINDS[kind]} | {f.starts_per_s:,.0f} | {s_ratio} | {f.hellos_per_s:,.1f} | {h_ratio} |")
    if "durable" in medians and "nofsync" in medians:
        d, n = medians["durable"], medians["nofsync"]
        print(f"fsync costs {1 - d.starts_per_s / n.starts_per_s:.0%} of starts/s and "
              f"{1 - d.hellos_per_s / n.hellos_per_s:.0%} of hello_cities/s (durable with fsync against without; "
              "negative: lost in the noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
