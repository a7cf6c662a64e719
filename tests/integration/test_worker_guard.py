"""The co-hosted worker against any DTS (issue 23): a work item it cannot answer or receive never stops the others.

Real worker, real backend, real sockets. An answer larger than DTS takes fails its own instance (the SDK alone would
log the refusal and leave the work item to come back for ever); a work item past the worker's receive limit ends
every stream it is offered on, and `/readyz` says so, with the gRPC error, while it lasts.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from durabletask import task
from durabletask.client import OrchestrationStatus

from listener import service
from localdts import LocalDts
from sbworker.core import clients, config
from sbworker.core.worker_guard import DTS_MESSAGE_BYTES, ERROR_TYPE, WorkerGuard
from tests.fixtures.dts import DtsBackend, start_backend
from tests.integration.harness import eventually
from tests.support.ports import free_port

FIVE_MIB = 5 * 1024 * 1024


def big_answer(ctx: task.OrchestrationContext, size: int) -> str:
    return "x" * size


def big_result(ctx: task.ActivityContext, size: int) -> str:
    return "y" * size


def calls_big_result(ctx: task.OrchestrationContext, size: int) -> Generator[task.Task[Any], Any, int]:
    result = yield ctx.call_activity(big_result, input=size)
    return len(result)


@pytest.fixture
def backend() -> Iterator[DtsBackend]:
    b = start_backend()  # its own backend: nothing here may disturb the session's
    yield b
    b.stop()


def test_answers_larger_than_dts_takes_fail_their_instance_and_the_others_run(backend: DtsBackend) -> None:
    guard = WorkerGuard()
    worker = service.dts_worker(backend.settings, guard=guard)
    worker.add_orchestrator(big_answer)
    worker.add_orchestrator(calls_big_result)
    worker.add_activity(big_result)
    worker.start()
    client = clients.dts_client(backend.settings)
    try:
        output = client.schedule_new_orchestration(big_answer, input=FIVE_MIB)
        activity = client.schedule_new_orchestration(calls_big_result, input=FIVE_MIB)
        others = [client.schedule_new_orchestration("hello_cities") for _ in range(3)]
        for iid in others:
            state = client.wait_for_orchestration_completion(iid, timeout=30)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
        state = client.wait_for_orchestration_completion(output, timeout=30)
        assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
        assert state.failure_details is not None and state.failure_details.error_type == ERROR_TYPE
        assert "answer is 5,242," in state.failure_details.message
        assert "larger than the 4 MiB that DTS accepts in one message" in state.failure_details.message
        state = client.wait_for_orchestration_completion(activity, timeout=30)
        assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
        assert state.failure_details is not None
        assert "the activity's result is 5,242," in state.failure_details.message
        assert guard.health.problem() is None  # one bad instance is not the worker's problem
    finally:
        worker.stop()
        client.close()


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_a_work_item_the_worker_cannot_receive_makes_readyz_say_why_until_it_is_gone() -> None:
    port = free_port()
    with LocalDts(port=0) as dts:
        settings = config.load({"DTS_CONNECTION_STRING": dts.connection_string, "HEALTH_PORT": str(port)})
        # A worker that receives less than localdts sends: the case of a DTS that sends what a worker cannot take.
        # It reopens its stream within half a second (the SDK waits up to 30 s): five offers of the item, not minutes.
        settings = replace(settings, dts=replace(settings.dts, max_receive_bytes=1024 * 1024,
                                                 worker_reconnect_cap_seconds=0.5))
        assert settings.dts.max_receive_bytes < DTS_MESSAGE_BYTES
        stop = asyncio.Event()
        served = asyncio.create_task(service.serve(settings, with_listener=False, stop=stop))
        client = clients.dts_client(settings.dts)

        async def readyz() -> tuple[int, dict[str, Any]]:
            return await asyncio.to_thread(_get, port, "/readyz")

        async def completes(name: str) -> None:
            iid = await asyncio.to_thread(client.schedule_new_orchestration, name)
            state = await asyncio.to_thread(client.wait_for_orchestration_completion, iid, timeout=60)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED

        try:
            await completes("hello_cities")

            async def ready() -> bool:
                status, body = await readyz()
                return status == 200 and body.get("worker") is True and "reasons" not in body

            await eventually(ready, timeout=10, what="ready with a working worker")
            waiting = await asyncio.to_thread(client.schedule_new_orchestration, "approval_workflow", input={})
            await asyncio.to_thread(client.wait_for_orchestration_start, waiting, timeout=30)  # its events come later
            for _ in range(6):  # 1.5 MiB of events: the next work item of that instance is past 1 MiB
                await asyncio.to_thread(client.raise_orchestration_event, waiting, "Bulk", data="z" * 262_144)

            async def unready() -> dict[str, Any] | None:
                status, body = await readyz()
                return body if status == 503 and body.get("worker") is False else None

            body = await eventually(unready, timeout=60, interval=0.5, what="readyz naming the stuck worker")
            assert body["dts"] is True and body["status"] == "not ready"
            reason = body["reasons"]["worker"]
            assert re.search(r"work-item stream failed [3-9] times in a row", reason), reason
            assert "RESOURCE_EXHAUSTED" in reason and "larger than max" in reason
            # localdts ends an instance whose work item went unanswered 5 times: then the worker runs again.
            state = await asyncio.to_thread(client.wait_for_orchestration_completion, waiting, timeout=120)
            assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
            await eventually(ready, timeout=60, interval=0.5, what="ready again once the item is gone")
            await completes("hello_cities")
        finally:
            stop.set()
            await asyncio.wait_for(served, 60)
            client.close()
