"""Real processes and real SDK clients against localdts: the backend and workers as subprocesses (the tests' one
Process), waits for an instance's status (through the tests' one wait-until)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from durabletask import client as dt_client
from durabletask import history as dt_history
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from tests.support.processes import Process
from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]
TASKHUB = "default"


def endpoint(port: int) -> str:
    return f"http://localhost:{port}"


def new_client(port: int) -> DurableTaskSchedulerClient:
    return DurableTaskSchedulerClient(host_address=endpoint(port), taskhub=TASKHUB, token_credential=None,
                                      secure_channel=False)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


READY = "Endpoint="  # localdts prints its connection string once it serves


def localdts_proc(args: list[str], log: Path, env: Mapping[str, str] | None = None) -> Process:
    """`python -m localdts ARGS`, ready once it printed its connection string (`ready_line`); `env` adds
    variables to this process's environment."""
    return Process(args, {**_env(), **(env or {})}, log, module="localdts", ready=READY)


def backend_proc(port: int, data: Path, log: Path, *extra: str, env: Mapping[str, str] | None = None) -> Process:
    return localdts_proc(["--port", str(port), "--data", str(data), *extra], log, env)


def worker_proc(port: int, log: Path, *extra: str) -> Process:
    """tests/localdts/worker_proc.py: a durabletask worker of its own, ready once it printed `ready`."""
    return Process([endpoint(port), *extra], _env(), log, module="tests.localdts.worker_proc", ready="ready")


T = TypeVar("T")


def retrying(call: Callable[[], T], timeout: float = 30) -> T:
    """Client calls right after a restart may meet a channel still backing off: try again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def state(client: DurableTaskSchedulerClient, instance_id: str) -> dt_client.OrchestrationState | None:
    """The instance's state, or None while the backend is unreachable (it may be restarting)."""
    try:
        return client.get_orchestration_state(instance_id)
    except Exception:
        return None


def wait_status(client: DurableTaskSchedulerClient, instance_id: str, status: dt_client.OrchestrationStatus,
                timeout: float = 30.0) -> dt_client.OrchestrationState:
    found: list[dt_client.OrchestrationState] = []

    def reached() -> bool:
        s = state(client, instance_id)
        if s is not None and s.runtime_status == status:
            found.append(s)
            return True
        return False
    until(reached, what=f"{instance_id} to be {status.name}", timeout=timeout)
    return found[-1]


def wait_custom_status(client: DurableTaskSchedulerClient, instance_id: str, needle: str,
                       timeout: float = 30.0) -> None:
    def has() -> bool:
        s = state(client, instance_id)
        return s is not None and needle in (s.serialized_custom_status or "")
    until(has, what=f"{instance_id} custom status containing {needle!r}", timeout=timeout)


def count(events: list[dt_history.HistoryEvent], kind: type[dt_history.HistoryEvent]) -> int:
    return sum(1 for e in events if isinstance(e, kind))
