"""Interop proof for localdts with a second, independent client stack: @microsoft/durabletask-js (on grpc-js).

This SDK found what our Python tests never hit: a sub-orchestration's start named no parent, and a wait sent
without a gRPC deadline (its waits never send one) failed. Each test starts a durable LocalDts on a free port,
runs one scenario of ``scenarios.mjs`` with node against it, and asserts on the JSON it prints. ``npm ci`` runs
once (``tests/interop/dts/node_modules``). Without node or npm the tests skip locally, and fail in CI (``CI``
set), where a missing client stack must not pass silently.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdts import LocalDts
from tests.fixtures.node import node_with_packages
from tests.localdts.worker_proc import build_worker

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with @microsoft/durabletask-js installed from package-lock.json (npm ci, once)."""
    return node_with_packages(HERE, "the JavaScript Durable Task interop tests")


@pytest.fixture
def dts(tmp_path: Path) -> Iterator[LocalDts]:
    with LocalDts(port=0, data_path=tmp_path / "data") as running:
        yield running


def run(node: str, dts: LocalDts, scenario: str, **options: Any) -> dict[str, Any]:
    result = subprocess.run([node, str(HERE / "scenarios.mjs"), scenario, f"localhost:{dts.port}",
                             json.dumps(options)], cwd=HERE, capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, (
        f"{scenario} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    output: dict[str, Any] = json.loads(lines[-1])
    return output


def test_js_sub_orchestration_knows_its_parent_and_a_wait_without_deadline_returns(node: str, dts: LocalDts) -> None:
    out = run(node, dts, "subOrchestration")
    state = out["state"]
    assert state["status"] == "COMPLETED", state
    result = json.loads(state["output"])
    assert result["self"] == out["id"]
    saw = result["childSaw"]
    assert saw is not None, "the sub-orchestration's ExecutionStarted named no parent"
    assert (saw["instanceId"], saw["name"]) == (out["id"], "jsParent")
    assert isinstance(saw["taskScheduledId"], int)


def test_js_start_raise_terminate_and_purge(node: str, dts: LocalDts) -> None:
    out = run(node, dts, "manage", raisedId="js-raised", terminatedId="js-terminated")
    assert out["started"]["status"] == "RUNNING"
    assert out["raised"]["status"] == "COMPLETED"
    assert json.loads(out["raised"]["output"]) == {"got": {"n": 42}}
    assert out["terminated"]["status"] == "TERMINATED"
    assert json.loads(out["terminated"]["output"]) == "enough"
    assert out["purged"] == [1, 1]
    assert out["afterPurge"] == [None, None]
    assert out["longId"]["error"]["code"] == 3  # INVALID_ARGUMENT, as DTS: ids are at most 100 characters
    assert "longer than 100 characters" in out["longId"]["error"]["message"]
    assert out["cleanEntityStorage"] == {"emptyEntitiesRemoved": 0, "orphanedLocksReleased": 0}


def test_a_js_client_starts_our_orchestration_and_the_python_worker_runs_it(node: str, dts: LocalDts) -> None:
    worker = build_worker(dts.endpoint)
    worker.start()
    try:
        out = run(node, dts, "startPython", name="hello_cities")
    finally:
        worker.stop()
    state = out["state"]
    assert (state["name"], state["status"]) == ("hello_cities", "COMPLETED"), state
    assert json.loads(state["output"]) == "Hello Tokyo!, Hello Seattle!, Hello London!"
