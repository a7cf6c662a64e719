"""Workflows that grow their own history, for the isolation tests (also registered by ``worker_proc``).

``retries_with_its_input`` is the case reproduced in issue 23: every retry of an always-failing activity copies
the whole input into a new ``TaskScheduled`` event, so an input of 80,000 "é" (480 KB once JSON-escaped) passes
a worker's 4 MiB receive limit after about nine retries.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

from durabletask import task


def always_fails(ctx: task.ActivityContext, payload: Any) -> None:
    raise RuntimeError("this activity always fails")


def retries_with_its_input(ctx: task.OrchestrationContext, payload: Any) -> Generator[task.Task[Any], Any, Any]:
    policy = task.RetryPolicy(first_retry_interval=timedelta(0), max_number_of_attempts=100)
    yield ctx.call_activity(always_fails, input=payload, retry_policy=policy)
    return "unreachable"


def echo(ctx: task.ActivityContext, value: Any) -> Any:
    return value


def quick(ctx: task.OrchestrationContext, n: Any) -> Generator[task.Task[Any], Any, Any]:
    """A normal workflow: one activity."""
    value = yield ctx.call_activity(echo, input=n)
    return value


def collects_events(ctx: task.OrchestrationContext, count: int) -> Generator[task.Task[Any], Any, Any]:
    """Waits for ``count`` events named "data" (a target for raised events), then returns their sizes."""
    sizes = []
    for _ in range(count):
        value = yield ctx.wait_for_external_event("data")
        sizes.append(len(value) if isinstance(value, str) else 0)
    return sizes


def big_output(ctx: task.OrchestrationContext, size: int) -> str:
    return "o" * size


def big_activity_result(ctx: task.OrchestrationContext, size: int) -> Generator[task.Task[Any], Any, Any]:
    try:
        yield ctx.call_activity(makes_bytes, input=size)
    except task.TaskFailedError as error:
        return f"failed: {error.details.message}"
    return "returned"


def makes_bytes(ctx: task.ActivityContext, size: int) -> str:
    return "r" * size


ORCHESTRATORS = (retries_with_its_input, quick, collects_events, big_output, big_activity_result)
ACTIVITIES = (always_fails, echo, makes_bytes)


def register(worker: Any) -> None:
    for orchestrator in ORCHESTRATORS:
        worker.add_orchestrator(orchestrator)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
