"""An instance started by the old workflow_with_retry finishes under the new one (issue 23: versioning).

The old orchestrator is kept below exactly as it shipped before version "2" (it handed the whole input to every
attempt and allowed 100 attempts). A worker running it takes an instance half-way through its retries; then that
worker stops and one with today's registry takes over. The instance must replay its old history and finish as the
old code would have: with more attempts than version "2" allows, which a replay on version "2"'s steps could not
reproduce. A new instance started through the listener's path runs version "2", whose attempts carry a few bytes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from durabletask import task
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus

from activities import services
from activities.services import compensation_activity, unreliable_service
from listener import service
from orchestrations import registry
from sbworker.core import clients
from tests.fixtures.dts import DtsBackend, start_backend
from tests.support.wait import until


def workflow_with_retry(ctx: task.OrchestrationContext, request: Any) -> Generator[task.Task[Any], Any, Any]:
    """The orchestrator as it shipped before version "2" (its retry policy inlined)."""
    o = request.get("retry") if isinstance(request, dict) and isinstance(request.get("retry"), dict) else {}

    def number(key: str, default: float, low: float, high: float) -> float:
        value = o.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        return float(value) if ok else default

    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=number("first_retry_seconds", 5, 0, 3600)),
        max_number_of_attempts=int(number("max_attempts", 3, 1, 100)),
        backoff_coefficient=number("backoff", 2.0, 1, 10),
        max_retry_interval=timedelta(seconds=number("max_interval_seconds", 60, 0, 3600)),
    )
    try:
        result = yield ctx.call_activity(unreliable_service, input=request, retry_policy=policy)
        return result
    except task.TaskFailedError as ex:
        message = ex.details.message or str(ex)
        ctx.set_custom_status({"error": message})
        yield ctx.call_activity(compensation_activity, input=request)
        return "Compensated"


@pytest.fixture
def backend() -> Iterator[DtsBackend]:
    b = start_backend()  # its own backend: the session's worker must not take these work items
    yield b
    b.stop()


def old_worker(backend: DtsBackend) -> DurableTaskSchedulerWorker:
    """Today's activities, and the old orchestrator under its name."""
    worker = DurableTaskSchedulerWorker(host_address=backend.settings.endpoint, taskhub=backend.settings.taskhub,
                                        secure_channel=False, token_credential=None)
    worker.add_orchestrator(workflow_with_retry)
    for activity in registry.ACTIVITIES.values():
        worker.add_activity(activity)
    return worker


def failed_attempts(client: DurableTaskSchedulerClient, instance_id: str) -> int:
    return sum(1 for e in client.get_orchestration_history(instance_id) if type(e).__name__ == "TaskFailedEvent")


def test_an_instance_half_way_through_the_old_retries_finishes_under_the_new_code(backend: DtsBackend) -> None:
    client = clients.dts_client(backend.settings)
    key = f"v1-{uuid.uuid4().hex}"
    # Eleven attempts at 0.5 s: fine for the old code, beyond version "2"'s bounds (10 attempts, 1 s apart).
    request = {"key": key, "always_fail": True, "pad": "p" * 2000,
               "retry": {"max_attempts": 11, "first_retry_seconds": 0.5, "backoff": 1}}
    worker = old_worker(backend)
    worker.start()
    try:
        iid = client.schedule_new_orchestration("workflow_with_retry", input=request)  # no version, as it was
        # past version "2"'s default of 3 attempts
        until(lambda: failed_attempts(client, iid) >= 5, what="the old code retrying five times", timeout=30,
              interval=0.1)
    finally:
        worker.stop()
    attempts_before = services.attempts(key)
    assert 5 <= attempts_before < 11
    new = service.dts_worker(backend.settings)
    new.start()
    try:
        state = client.wait_for_orchestration_completion(iid, timeout=60)
    finally:
        new.stop()
        client.close()
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    assert json.loads(state.serialized_output or "null") == "Compensated"
    assert json.loads(state.serialized_custom_status or "{}") == {"error": "service unavailable (attempt 11)"}
    assert services.attempts(key) == 11


def test_version_2_hands_each_attempt_a_few_bytes_and_returns_the_input_s_result(backend: DtsBackend) -> None:
    client = clients.dts_client(backend.settings)
    worker = service.dts_worker(backend.settings)
    worker.start()
    big = "\u00e9" * 50_000  # 300 KB in DTS
    try:
        iid = client.schedule_new_orchestration(
            "workflow_with_retry", version=registry.version_of("workflow_with_retry"),
            input={"fail_times": 2, "result": {"ok": True}, "pad": big,
                   "retry": {"first_retry_seconds": 1, "backoff": 1}})
        state = client.wait_for_orchestration_completion(iid, timeout=60)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
        assert json.loads(state.serialized_output or "null") == {"ok": True}
        history = client.get_orchestration_history(iid)
    finally:
        worker.stop()
        client.close()
    scheduled = [e for e in history if type(e).__name__ == "TaskScheduledEvent"]
    assert len(scheduled) == 3
    assert all(len(e.input or "") < 100 for e in scheduled), [e.input for e in scheduled]
    [started] = [e for e in history if type(e).__name__ == "ExecutionStartedEvent"]
    assert started.version == "2"
