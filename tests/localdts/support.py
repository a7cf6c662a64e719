"""Real processes and real SDK clients against localdts: the backend and workers as subprocesses (the tests' one
Process), waits for an instance's status (through the tests' one wait-until)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
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


class RawWorker:
    """A worker driven by hand over a raw ``GetWorkItems`` stream: it takes items one by one, answers some and
    goes away holding others, as a lost or crashing worker does. The stream ends by itself after ``timeout``."""

    def __init__(self, port: int, timeout: float = 60.0, orchestrations: tuple[str, ...] | None = None) -> None:
        """``orchestrations``: take only orchestrations of these names (work item filters; then no activities)."""
        self.channel = grpc.insecure_channel(f"localhost:{port}")
        self.stub = stubs.TaskHubSidecarServiceStub(self.channel)
        request = pb.GetWorkItemsRequest()
        if orchestrations is not None:
            request.workItemFilters.orchestrations.extend(pb.OrchestrationFilter(name=n) for n in orchestrations)
        self._items: Any = self.stub.GetWorkItems(request, timeout=timeout)

    def take(self) -> pb.WorkItem:
        """The next work item (grpc.RpcError DEADLINE_EXCEEDED if none comes before the stream's timeout)."""
        item: pb.WorkItem = next(self._items)
        return item

    def complete(self, item: pb.WorkItem, token: str | None = None) -> None:
        """Answer an orchestration work item: the orchestration completes (``token``: answer with another one)."""
        done = pb.CompleteOrchestrationAction(orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED)
        self.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
            instanceId=item.orchestratorRequest.instanceId, completionToken=token or item.completionToken,
            actions=[pb.OrchestratorAction(id=-1, completeOrchestration=done)]))

    def wait(self, item: pb.WorkItem) -> None:
        """Answer an orchestration work item with no action: the orchestration keeps running, waiting for events."""
        self.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
            instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken, actions=[]))

    def schedule(self, item: pb.WorkItem, activity: str, value: str) -> None:
        """Answer an orchestration work item: it schedules ``activity`` (task id 0) with input ``value``."""
        task = pb.ScheduleTaskAction(name=activity)
        task.input.value = value
        self.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
            instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken,
            actions=[pb.OrchestratorAction(id=0, scheduleTask=task)]))

    def go_away(self) -> None:
        """End the stream without answering what it holds."""
        self._items.cancel()

    def close(self) -> None:
        self._items.cancel()
        self.channel.close()
