"""Row 12: 1, 2 and 4 replicas of `sbworker run` against one broker and one DTS backend, every connection 10 ms away.

Each replica is a co-hosted `sbworker run`; bench.delayproxy adds 10 ms each way on its Service Bus and its DTS
connections, as in a deployment where both services are in another building. The replicas start together, each
attaches its receiver and takes warm-up workflows; then all are paused, the backlog of `hello_cities` starts is
loaded, and the clock runs from resuming them to DTS reporting every instance COMPLETED (end_to_end.measure).
Two set-ups:
- defaults: each replica at the service's defaults. On this 2-core machine one such replica already keeps the
  cores busy, so this column shows the machine's limit, not latency's.
- latency-bound: each replica held to a few messages and worker threads, far below what the cores allow: a
  simulation of replicas that each have cores of their own and wait on the network, as in Azure. Throughput
  should then grow with the replicas until the shared broker, the backend or these two cores give out.
The README's capacity plan (Performance) turns these figures into replicas, DTS capacity units and a Service Bus
tier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import compare, end_to_end
from bench.stack import Backend, Broker, DelayProxy
from bench.workflows import settings_env
from sbworker.core.config import WorkerSettings

COUNTS = (1, 2, 4)
DELAY = 0.010  # seconds added each way, on Service Bus and on DTS
ORCHESTRATION = "hello_cities"


@dataclass(frozen=True)
class Setup:
    name: str
    max_concurrent: int
    prefetch: int
    worker: WorkerSettings

    def describe(self) -> str:
        return (f"{self.max_concurrent} messages, prefetch {self.prefetch}, {self.worker.threads} worker threads, "
                f"{self.worker.max_concurrent_orchestrations}+{self.worker.max_concurrent_activities} work items "
                "per replica")


LATENCY_BOUND = Setup("latency-bound", 4, 10, WorkerSettings(threads=2, max_concurrent_orchestrations=4,
                                                             max_concurrent_activities=4))


@dataclass(frozen=True)
class Cell:
    setup: Setup
    runs: dict[int, list[end_to_end.EndToEnd]]  # replicas -> one result per round

    def median(self, count: int) -> float:
        return compare.spread(self.runs[count]).median

    def scaling(self, count: int) -> float:
        """Throughput with `count` replicas ÷ with one."""
        return self.median(count) / self.median(1)


@dataclass(frozen=True)
class Replicas:
    n: int
    repeats: int
    cells: list[Cell]


def setups(max_concurrent: int, prefetch: int) -> tuple[Setup, ...]:
    return Setup("defaults", max_concurrent, prefetch, WorkerSettings()), LATENCY_BOUND


async def measure(broker: Broker, backend: Backend, n: int, repeats: int, *, max_concurrent: int, prefetch: int,
                  say: Callable[[str], None], counts: Sequence[int] = COUNTS) -> Replicas:
    cells = []
    proxy = DelayProxy(broker, backend, DELAY)
    try:
        for setup in setups(max_concurrent, prefetch):
            def run(count: int, setup: Setup = setup) -> Callable[[], Any]:
                return lambda: end_to_end.measure(broker, backend, n, max_concurrent=setup.max_concurrent,
                                                  prefetch=setup.prefetch, orchestration=ORCHESTRATION, proxy=proxy,
                                                  worker_env=settings_env(setup.worker), replicas=count, timeout=600)

            say(f"   {setup.name} ({setup.describe()}): {', '.join(map(str, counts))} replica(s)")
            runs = await compare.rotated({str(count): run(count) for count in counts}, repeats, say)
            cells.append(Cell(setup, {int(count): results for count, results in runs.items()}))
    finally:
        proxy.close()
    return Replicas(n, repeats, cells)


def row(result: Replicas, how: str) -> tuple[str, str, str, str]:
    parts = []
    for cell in result.cells:
        counts = sorted(cell.runs)
        scaled = ", ".join(f"{count}: {cell.scaling(count):.2f}x" for count in counts if count != 1)
        parts.append(f"{cell.setup.name}: 1 replica {compare.spread(cell.runs[1]).text(1)}/s; {scaled}")
    return (f"12. Replicas through {DELAY * 1000:g} ms, workflows/s ÷ one replica", "; ".join(parts),
            f"{result.n:,} {ORCHESTRATION} end to end, bench.delayproxy on every Service Bus and DTS connection; "
            f"table below; {how}", "")


def table(result: Replicas) -> list[str]:
    lines = ["| set-up | replicas | workflows/s | ÷ 1 replica | CPU ms per workflow, all replicas | "
             "DTS backend, cores |", "| --- | --- | --- | --- | --- | --- |"]
    for cell in result.cells:
        for count in sorted(cell.runs):
            runs = cell.runs[count]
            cpu = compare.spread(runs, lambda r: r.process_cpu_s / r.n * 1000).median
            backend = compare.spread(runs, lambda r: r.backend_cpu_s / r.seconds).median
            lines.append(f"| {cell.setup.name} | {count} | {compare.spread(runs).text(1)} | "
                         f"{cell.scaling(count):.2f}x | {cpu:.1f} | {backend:.2f} |")
    return lines


def describe(result: Replicas) -> str:
    return "; ".join(f"{cell.setup.name}: {cell.setup.describe()}" for cell in result.cells)


def summary(result: Replicas) -> dict[str, Any]:
    """For bench/results/latest.json: the median workflows/s and the scaling of each cell."""
    return {cell.setup.name: {str(count): {"per_second": cell.median(count), "scaling": cell.scaling(count)}
                              for count in sorted(cell.runs)} for cell in result.cells}
