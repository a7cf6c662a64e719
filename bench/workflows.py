"""Row 11: workflows completed per second while every DTS round trip costs real latency.

bench.delayproxy adds 2 ms or 10 ms each way on the DTS connections only (the listener's client and the worker);
Service Bus stays on loopback, so what is measured is the worker. Each cell runs `hello_cities` (three chained
activities) or `fan_out_fan_in` (five activities at once) end to end, as row 6 does, in rotated rounds:
- co-hosted: `sbworker run` with its defaults (WORKER_THREADS, WORKER_MAX_CONCURRENT_ORCHESTRATIONS and
  WORKER_MAX_CONCURRENT_ACTIVITIES; sbworker/core/config.py);
- plain: `sbworker run --no-worker` beside bench.plain_worker, a durabletask worker with the SDK's defaults
  (ConcurrencyOptions(): a thread pool of CPU count + 4, 100 x CPU count work items of each kind), as the DTS
  guide writes one: what a user would otherwise run;
- sdk: the SDK alone, no Service Bus and no sbworker code: the async client schedules the instances straight
  into DTS and bench.plain_worker, given sbworker's worker settings, runs them (end_to_end.sdk_ceiling). The
  ceiling for these settings at this latency.
The sweep behind the defaults runs the co-hosted service at 10 ms with WORKER_THREADS from the SDK's default up.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import compare, end_to_end
from bench.stack import Backend, Broker, DelayProxy
from sbworker.core.config import WorkerSettings

DELAYS = (0.002, 0.010)  # seconds added each way on the DTS connections
ORCHESTRATIONS = ("hello_cities", "fan_out_fan_in")
TARGET_DELAY_MS = 10.0
TARGET_RATIO = 2.0  # co-hosted ÷ plain at 10 ms
SWEEP_DELAY = 0.010
SWEEP_ORCHESTRATION = "hello_cities"


def sdk_threads() -> int:
    """The SDK's default thread pool on this machine (durabletask.worker.ConcurrencyOptions)."""
    return (os.cpu_count() or 1) + 4


def sweep_threads() -> tuple[int, ...]:
    return tuple(sorted({sdk_threads(), 16, 32, 64, 128}))


@dataclass(frozen=True)
class Cell:
    orchestration: str
    delay_ms: float
    runs: dict[str, list[end_to_end.EndToEnd]]  # "cohosted" / "plain" / "sdk" -> one result per round

    def median(self, name: str) -> float:
        return compare.spread(self.runs[name]).median

    @property
    def ratio(self) -> float:
        """Co-hosted ÷ the plain worker at the SDK's defaults: issue 28's target."""
        return self.median("cohosted") / self.median("plain")

    @property
    def vs_sdk(self) -> float | None:
        """Co-hosted ÷ the SDK alone with the same worker settings."""
        return self.median("cohosted") / self.median("sdk") if self.runs.get("sdk") else None


@dataclass(frozen=True)
class Workflows:
    n: int
    repeats: int
    cells: list[Cell]
    sweep: list[end_to_end.EndToEnd]  # co-hosted at SWEEP_DELAY, one run per WORKER_THREADS value

    def at_target(self) -> list[Cell]:
        return [c for c in self.cells if c.delay_ms == TARGET_DELAY_MS]

    @property
    def met(self) -> bool | None:
        cells = self.at_target()
        return all(c.ratio >= TARGET_RATIO for c in cells) if cells else None


def settings_env(settings: WorkerSettings) -> dict[str, str]:
    """`settings` as the variables `sbworker run` and bench.plain_worker read."""
    return {"WORKER_THREADS": str(settings.threads),
            "WORKER_MAX_CONCURRENT_ORCHESTRATIONS": str(settings.max_concurrent_orchestrations),
            "WORKER_MAX_CONCURRENT_ACTIVITIES": str(settings.max_concurrent_activities)}


async def measure(broker: Broker, backend: Backend, n: int, repeats: int, *, max_concurrent: int, prefetch: int,
                  sweep: bool, say: Callable[[str], None], delays: Sequence[float] = DELAYS,
                  orchestrations: Sequence[str] = ORCHESTRATIONS) -> Workflows:
    cells: list[Cell] = []
    swept: list[end_to_end.EndToEnd] = []
    for delay in delays:
        proxy = DelayProxy(broker, backend, delay)
        try:
            for orchestration in orchestrations:
                def run(split: bool, orchestration: str = orchestration, proxy: DelayProxy = proxy
                        ) -> Callable[[], Any]:
                    return lambda: end_to_end.measure(broker, backend, n, max_concurrent=max_concurrent,
                                                      prefetch=prefetch, split=split, orchestration=orchestration,
                                                      proxy=proxy, timeout=600)

                def sdk(orchestration: str = orchestration, proxy: DelayProxy = proxy) -> Any:
                    return end_to_end.sdk_ceiling(broker, backend, n, orchestration=orchestration, proxy=proxy,
                                                  worker_env=settings_env(WorkerSettings()), timeout=600)

                say(f"   {orchestration}, {delay * 1000:g} ms each way on DTS: co-hosted, plain worker, SDK alone")
                runs = await compare.rotated({"cohosted": run(False), "plain": run(True), "sdk": sdk}, repeats, say)
                cells.append(Cell(orchestration, delay * 1000, runs))
            if sweep and delay == SWEEP_DELAY:
                for threads in sweep_threads():
                    say(f"   worker sweep: WORKER_THREADS={threads}, {SWEEP_ORCHESTRATION}, {delay * 1000:g} ms")
                    swept.append(await end_to_end.measure(
                        broker, backend, n, max_concurrent=max_concurrent, prefetch=prefetch,
                        orchestration=SWEEP_ORCHESTRATION, proxy=proxy, timeout=600,
                        worker_env={"WORKER_THREADS": str(threads)}))
                    say(f"   {swept[-1].per_second:,.1f} workflows/s")
        finally:
            proxy.close()
    return Workflows(n, repeats, cells, swept)


def row(result: Workflows, how: str) -> tuple[str, str, str, str]:
    parts = []
    for c in result.cells:
        text = f"{c.orchestration} {c.delay_ms:g} ms: {c.ratio:.2f}x plain"
        if c.vs_sdk is not None:
            text += f", {c.vs_sdk:.2f}x SDK alone"
        text += (f" (co-hosted {compare.spread(c.runs['cohosted']).text(1)}/s, "
                 f"plain {compare.spread(c.runs['plain']).text(1)}/s")
        if c.runs.get("sdk"):
            text += f", SDK alone {compare.spread(c.runs['sdk']).text(1)}/s"
        parts.append(text + ")")
    met = result.met
    verdict = "" if met is None else ("met" if met else "MISSED")
    defaults = WorkerSettings()
    return (f"11. Workflows through DTS latency, co-hosted ÷ plain worker (target {TARGET_RATIO:g}x at "
            f"{TARGET_DELAY_MS:g} ms)", "; ".join(parts),
            f"{result.n:,} workflows end to end, bench.delayproxy on the DTS connections only; co-hosted at its "
            f"defaults (WORKER_THREADS={defaults.threads}, {defaults.max_concurrent_orchestrations} orchestration "
            f"and {defaults.max_concurrent_activities} activity work items), the plain worker at the SDK's "
            f"({sdk_threads()} threads here), the SDK alone: async client straight into DTS and a plain worker "
            f"with sbworker's settings; {how}", verdict)


def table(result: Workflows) -> list[str]:
    if not result.sweep:
        return []
    lines = [f"Sweep of the co-hosted worker ({result.n:,} {SWEEP_ORCHESTRATION} per cell, "
             f"{SWEEP_DELAY * 1000:g} ms each way on DTS, one run each; WORKER_THREADS={sdk_threads()} is the "
             "SDK's default here):", "",
             "| WORKER_THREADS | workflows/s | CPU ms per workflow (service) | DTS backend, cores |",
             "| --- | --- | --- | --- |"]
    for run in result.sweep:
        threads = dict(run.worker_env).get("WORKER_THREADS", "?")
        lines.append(f"| {threads} | {run.per_second:,.1f} | {run.process_cpu_s / run.n * 1000:.1f} | "
                     f"{run.backend_cpu_s / run.seconds:.2f} |")
    return lines


def summary(result: Workflows) -> dict[str, Any]:
    """For bench/results/latest.json: the medians and ratios of every cell."""
    return {f"{c.orchestration}@{c.delay_ms:g}ms": {"cohosted": c.median("cohosted"), "plain": c.median("plain"),
                                                   "sdk": c.median("sdk") if c.runs.get("sdk") else None,
                                                   "ratio": c.ratio, "vs_sdk": c.vs_sdk,
                                                   "cpu_ms_per_workflow": statistics.median(
                                                       r.process_cpu_s / r.n * 1000 for r in c.runs["cohosted"])}
            for c in result.cells}
