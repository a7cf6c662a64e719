"""localdts against the SDK's plain in-memory backend, in one run: starts/s and completed ``hello_cities``/s.

    python -m bench.localdts_bench [--repeats 3] [--starts 2000] [--hellos 200] [--kinds sdk,memory,durable,nofsync]

Each backend runs in its own process (this script with ``--serve``), the worker in another (``--work``), and
this process drives the load, as ``make bench`` does (its localdts section calls :func:`measure`). Repeats are
interleaved across the backends, so that drift on a shared machine hits all of them; figures are medians of the
repeats, with the spread of the ratios. The fsync cost is durable with fsync against durable without it
(``synchronous=FULL`` against ``NORMAL``: both survive kill -9, only the first a power cut).
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
from collections.abc import Callable
from dataclasses import dataclass, field
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


def quiet() -> logging.Logger:
    """The SDK clients' logger in these benches: they would otherwise log every call (and warn about
    log_handler). Shared with bench.localdts_history and bench.localdts_isolation, as are the helpers below."""
    logger = logging.getLogger("bench.localdts.sdk")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def work(endpoint: str) -> int:
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    from orchestrations import registry

    worker = DurableTaskSchedulerWorker(host_address=endpoint, taskhub=TASKHUB, token_credential=None,
                                        secure_channel=False, logger=quiet())
    registry.register(worker)
    worker.start()
    print("ready", flush=True)
    _wait_for_signal()
    worker.stop()
    return 0


# --- the driver ------------------------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(*args: str) -> subprocess.Popen[str]:
    """``python ARGS`` in the repository, returned once it printed its first line (``ready``, or localdts's
    connection string)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    if not proc.stdout.readline().strip():
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


def _spawn(*args: str) -> subprocess.Popen[str]:
    return spawn("-m", "bench.localdts_bench", *args)


def end(proc: subprocess.Popen[str]) -> None:
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
                                             secure_channel=False, logger=quiet())
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
                                        secure_channel=False, logger=quiet())
    for iid in ids:
        state = client.wait_for_orchestration_completion(iid, timeout=300)
        if state is None or state.runtime_status != OrchestrationStatus.COMPLETED:
            raise RuntimeError(f"{iid} did not complete: {state}")
    client.close()


@dataclass
class Figures:
    starts_per_s: float
    hellos_per_s: float


@dataclass
class Comparison:
    """Every repeat of every backend, in run order, and what the table shows."""

    repeats: int
    starts: int
    hellos: int
    when: str
    runs: dict[str, list[Figures]] = field(default_factory=dict)

    @property
    def medians(self) -> dict[str, Figures]:
        return {k: Figures(statistics.median(f.starts_per_s for f in v), statistics.median(f.hellos_per_s for f in v))
                for k, v in self.runs.items() if v}

    def ratio(self, kind: str) -> Figures | None:
        """Median figures of ``kind`` over the SDK backend's (None without an SDK run)."""
        m = self.medians
        if kind not in m or "sdk" not in m:
            return None
        return Figures(m[kind].starts_per_s / m["sdk"].starts_per_s, m[kind].hellos_per_s / m["sdk"].hellos_per_s)

    def spread(self, kind: str) -> tuple[Figures, Figures] | None:
        """(lowest, highest) per-repeat ratio of ``kind`` to the SDK backend measured in the same repeat."""
        if kind not in self.runs or "sdk" not in self.runs:
            return None
        pairs = list(zip(self.runs[kind], self.runs["sdk"], strict=False))
        s = [k.starts_per_s / b.starts_per_s for k, b in pairs]
        h = [k.hellos_per_s / b.hellos_per_s for k, b in pairs]
        return Figures(min(s), min(h)), Figures(max(s), max(h))


def run_once(kind: str, starts: int, hellos: int) -> Figures:
    """One repeat: starts/s on a fresh backend, then hello_cities/s on another fresh one with a worker."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        endpoint = f"http://localhost:{port}"
        backend = _spawn("--serve", kind, str(port), str(Path(tmp) / "starts"))
        try:
            _, start_seconds = asyncio.run(_starts(endpoint, starts, "hello_cities"))
        finally:
            end(backend)

        port = free_port()
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
                end(worker)
        finally:
            end(backend)
    return Figures(starts / start_seconds, hellos / hello_seconds)


def measure(kinds: list[str], repeats: int, starts: int, hellos: int,
            progress: Callable[[str], None] | None = None) -> Comparison:
    """Run every kind ``repeats`` times, interleaved, so that drift on a shared machine hits every backend."""
    result = Comparison(repeats, starts, hellos, f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", {k: [] for k in kinds})
    for repeat in range(repeats):
        for kind in kinds:
            f = run_once(kind, starts, hellos)
            result.runs[kind].append(f)
            if progress is not None:
                progress(f"  repeat {repeat + 1} {kind:8} {f.starts_per_s:7.0f} starts/s {f.hellos_per_s:6.1f} hello/s")
    return result


def _ratio_cell(value: float, low: float, high: float, repeats: int) -> str:
    return f"{value:.2f}x" + (f" ({low:.2f}-{high:.2f})" if repeats > 1 else "")


def table(result: Comparison) -> list[str]:
    """The Markdown table (ratios: of the medians, and in brackets the range of the per-repeat ratios)."""
    lines = ["| backend | starts/s | vs SDK | completed hello_cities/s | vs SDK |", "| --- | --- | --- | --- | --- |"]
    for kind, f in result.medians.items():
        ratio, spread = result.ratio(kind), result.spread(kind)
        if kind == "sdk":
            s_cell = h_cell = "1.00x"
        elif ratio is None or spread is None:
            s_cell = h_cell = "-"
        else:
            low, high = spread
            s_cell = _ratio_cell(ratio.starts_per_s, low.starts_per_s, high.starts_per_s, result.repeats)
            h_cell = _ratio_cell(ratio.hellos_per_s, low.hellos_per_s, high.hellos_per_s, result.repeats)
        lines.append(f"| {KINDS[kind]} | {f.starts_per_s:,.0f} | {s_cell} | {f.hellos_per_s:,.1f} | {h_cell} |")
    medians = result.medians
    if "durable" in medians and "nofsync" in medians:
        d, n = medians["durable"], medians["nofsync"]
        lines.append(f"fsync costs {1 - d.starts_per_s / n.starts_per_s:.0%} of starts/s and "
                     f"{1 - d.hellos_per_s / n.hellos_per_s:.0%} of hello_cities/s (durable with fsync against "
                     "without; negative: lost in the noise)")
    return lines


def describe(result: Comparison) -> str:
    repeats = "one repeat" if result.repeats == 1 else f"medians of {result.repeats} interleaved repeats"
    return (f"{result.when}; {repeats}; {result.starts:,} starts (async client, 64 in flight), "
            f"{result.hellos:,} hello_cities (one worker process)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.localdts_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--starts", type=int, default=2000, help="instances started for starts/s")
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
    unknown = set(kinds) - set(KINDS)
    if unknown or args.repeats < 1:
        parser.error(f"unknown kinds {sorted(unknown)}" if unknown else "--repeats must be at least 1")
    result = measure(kinds, args.repeats, args.starts, args.hellos,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"localdts bench, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          + describe(result))
    print("\n".join(table(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
