"""The bench's reference listeners and its delay proxy really do the work: every message becomes an instance and is
completed (bench.listener_throughput.measure checks both with the broker and with DTS, never with the listener)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import end_to_end, listener_throughput, replicas, workflows
from bench.stack import REPO_ROOT, Backend, Broker, DelayProxy
from sbworker.core.config import WorkerSettings

pytestmark = pytest.mark.slow  # each listener process starts in ~2 s: ~20 s, and the quick bench ~90 s


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Broker, Backend]]:
    broker, backend = Broker(), Backend()
    try:
        yield broker, backend
    finally:
        broker.close()
        backend.close()


@pytest.mark.parametrize("kind", ["naive_sync", "naive_async", "sbworker"])
async def test_every_message_starts_its_orchestration_and_is_completed(stack: tuple[Broker, Backend],
                                                                       kind: str) -> None:
    broker, backend = stack
    result = await listener_throughput.measure(broker, backend, 25, max_concurrent=8, prefetch=10, kind=kind,
                                               timeout=60)
    assert result.n == 25 and result.kind == kind
    assert broker.remaining() == 0


async def test_through_the_delay_proxy(stack: tuple[Broker, Backend]) -> None:
    broker, backend = stack
    proxy = DelayProxy(broker, backend, 0.002)
    try:
        result = await listener_throughput.measure(broker, backend, 10, max_concurrent=8, prefetch=10,
                                                   kind="naive_sync", proxy=proxy, timeout=60)
    finally:
        proxy.close()
    assert result.delay_ms == 2.0


async def test_split_end_to_end_runs_the_orchestrations_in_the_plain_worker(stack: tuple[Broker, Backend]) -> None:
    broker, backend = stack
    result = await end_to_end.measure(broker, backend, 5, max_concurrent=8, prefetch=10, split=True, timeout=60)
    assert result.split and result.n == 5


async def test_the_workflows_row_completes_every_workflow_in_each_contender(stack: tuple[Broker, Backend]) -> None:
    """Row 11, one cell: co-hosted, plain worker and the SDK alone each complete all 6 fan_out_fan_in through the
    proxy (end_to_end waits for COMPLETED, and times out otherwise); the SDK alone runs with sbworker's settings."""
    broker, backend = stack
    result = await workflows.measure(broker, backend, 6, 1, max_concurrent=8, prefetch=10, sweep=False,
                                     say=lambda _text: None, delays=(0.002,), orchestrations=("fan_out_fan_in",))
    [cell] = result.cells
    assert set(cell.runs) == {"cohosted", "plain", "sdk"}
    assert all(run.n == 6 and run.delay_ms == 2.0 and run.orchestration == "fan_out_fan_in"
               for runs in cell.runs.values() for run in runs)
    [sdk] = cell.runs["sdk"]
    assert dict(sdk.worker_env) == workflows.settings_env(WorkerSettings())


async def test_replicas_each_attach_a_receiver_and_share_the_backlog(stack: tuple[Broker, Backend]) -> None:
    broker, backend = stack
    result = await replicas.measure(broker, backend, 8, 1, max_concurrent=8, prefetch=10, say=lambda _text: None,
                                    counts=(1, 2))
    assert [cell.setup.name for cell in result.cells] == ["defaults", "latency-bound"]
    for cell in result.cells:
        assert {count: [run.replicas for run in runs] for count, runs in cell.runs.items()} == {1: [1], 2: [2]}
    assert broker.receivers() == 0 and broker.remaining() == 0


@pytest.mark.timeout(400)
def test_quick_bench_prints_every_row(tmp_path: Path) -> None:
    """`python -m bench --quick` end to end (without the sweep and rows 8, 11 and 12, which have tests of their
    own)."""
    out = tmp_path / "latest.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--skip-sweep", "--skip-localdts",
                           "--skip-workflows", "--skip-replicas", "--output", str(out)],
                          capture_output=True, text=True, timeout=380, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("| 1. Raw DTS ceiling", "| 3. Listener throughput, loopback", "| 4. sbworker ÷ references",
                "| 5. Latency", "| 6. End to end", "| 7. Peak RSS", "| 9. Through a 2 ms-each-way proxy",
                "| receipt → settled (total) |"):
        assert row in done.stdout
    results = json.loads(out.read_text())
    assert set(results["loopback"]) == {"raw_dts", "raw_servicebus", "sbworker", "naive_sync", "naive_async"}
