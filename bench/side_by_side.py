"""Listener CPU per message of two or more checkouts, drained side by side: what a change to the listener saves.

On this shared 2-core machine the figure of one run moves by up to ±30% with whatever else runs, so two versions
measured one after the other cannot tell a 5% change. Here each version (a checkout of the repository: a
`git worktree`, or `git archive REV | tar -x -C DIR`) runs `sbworker run --no-worker` from its own directory
against a stack of its own (localbus and the DTS backend), every listener is paused on the same backlog of start
messages, and all are resumed at the same moment: the load of that moment hits each alike. Each round rotates which
one starts first, and the result is each version's CPU per message divided by the first version's, per round and
the median. An A/A run (one checkout twice) gave 0.98x, 0.94-1.06 over 4 rounds (2026-12-06): smaller changes need
more rounds.

`python -m bench.side_by_side [--messages 3000] [--rounds 6] NAME=DIR NAME=DIR ...` (the first is the reference).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Dts, preload, run_prefix, start_messages, wait_until
from bench.listener_throughput import start_listener
from bench.stack import Backend, Broker, cpu_seconds
from sbworker.core import config

MAX_CONCURRENT = config.DEFAULT_MAX_CONCURRENT_MESSAGES
PREFETCH = config.DEFAULT_PREFETCH_COUNT


@dataclass(frozen=True)
class Version:
    name: str
    root: Path


@dataclass
class Stack:
    broker: Broker
    backend: Backend
    dts: Dts


async def drain(version: Version, stack: Stack, n: int, loaded: asyncio.Event, go: asyncio.Event) -> float:
    """Start the version's listener, load its backlog, and once `go` is set drain it; its CPU ms per message."""
    listener = await start_listener(stack.broker, stack.backend, stack.dts, max_concurrent=MAX_CONCURRENT,
                                    prefetch=PREFETCH, root=version.root)
    try:
        prefix = run_prefix("side")
        listener.pause()
        await preload(stack.broker.connection_string, start_messages(prefix, n))
        loaded.set()
        await go.wait()
        cpu = cpu_seconds(listener.pid)
        listener.resume()
        await wait_until(stack.broker, empty=True, timeout=600)
        await stack.dts.wait_for(prefix, n, timeout=600)
        return (cpu_seconds(listener.pid) - cpu) / n * 1000
    finally:
        listener.stop()
        stack.backend.reset()


async def measure(versions: list[Version], n: int, rounds: int) -> dict[str, list[float]]:
    """CPU ms per message of each version, one entry per round."""
    stacks = [Stack(broker, backend, Dts(backend.port)) for broker, backend in
              ((Broker(), Backend()) for _ in versions)]
    figures: dict[str, list[float]] = {version.name: [] for version in versions}
    try:
        for r in range(rounds):
            order = list(zip(versions, stacks, strict=True))
            order = order[r % len(order):] + order[:r % len(order)]
            go = asyncio.Event()
            loaded = [asyncio.Event() for _ in order]
            runs = [asyncio.create_task(drain(version, stack, n, ready, go))
                    for (version, stack), ready in zip(order, loaded, strict=True)]
            await asyncio.gather(*(ready.wait() for ready in loaded))
            go.set()
            for (version, _), figure in zip(order, await asyncio.gather(*runs), strict=True):
                figures[version.name].append(figure)
            reference = figures[versions[0].name][-1]
            print(f"round {r + 1}: " + "  ".join(f"{v.name} {figures[v.name][-1]:.3f} ms "
                                                 f"({figures[v.name][-1] / reference:.3f}x)" for v in versions)
                  + f"  load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    finally:
        for stack in stacks:
            await stack.dts.close()
            stack.broker.close()
            stack.backend.close()
    return figures


def version(text: str) -> Version:
    name, sep, root = text.partition("=")
    if not sep or not name or not (Path(root) / "listener").is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR, DIR a checkout of this repository")
    return Version(name, Path(root).resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="backlog per listener and round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("versions", nargs="+", type=version, metavar="NAME=DIR")
    args = parser.parse_args(argv)
    if len(args.versions) < 2:
        parser.error("give at least two versions")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    figures = asyncio.run(measure(args.versions, args.messages, args.rounds))
    reference = figures[args.versions[0].name]
    print(f"side by side, {started}; {args.rounds} rounds of {args.messages:,} starts each; listener CPU per message")
    for v in args.versions:
        ratios = [x / y for x, y in zip(figures[v.name], reference, strict=True)]
        print(f"{v.name}: median {statistics.median(figures[v.name]):.3f} ms; {statistics.median(ratios):.3f}x "
              f"{args.versions[0].name} ({min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
