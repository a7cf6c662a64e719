"""Workflows the product does not ship, for what the dashboard shows of any worker's orchestrations: a failure
that a rewind can fix, a parent with a sub-orchestration, and a durable entity. Registered on a worker of the
test's own (tests/dashboard/test_parity.py), against the embedded backends without the product's service."""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

from durabletask import entities, task

# While clear, `flaky` fails: a test sets it to let a rewound instance complete.
repaired = threading.Event()
calls: list[str] = []


def steady(ctx: task.ActivityContext, value: Any) -> Any:
    calls.append(f"steady {value}")
    return value


def flaky(ctx: task.ActivityContext, value: Any) -> Any:
    calls.append(f"flaky {value}")
    if not repaired.is_set():
        raise RuntimeError("the service is down")
    return f"done {value}"


def fragile(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, list[Any]]:
    first = yield ctx.call_activity(steady, input=1)
    second = yield ctx.call_activity(flaky, input=2)
    return [first, second]


def child(ctx: task.OrchestrationContext, value: Any) -> Generator[task.Task[Any], Any, Any]:
    result = yield ctx.call_activity(steady, input=value)
    return result


def parent(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, list[Any]]:
    results = []
    for n in range(2):
        results.append((yield ctx.call_sub_orchestrator(child, input=n, instance_id=f"{ctx.instance_id}-child-{n}")))
    return results


def counter(ctx: entities.EntityContext, value: Any) -> Any:
    current = ctx.get_state(int, 0) or 0
    if ctx.operation == "add":
        ctx.set_state(current + int(value))
    return current


def register(worker: Any) -> None:
    for orchestrator in (fragile, child, parent):
        worker.add_orchestrator(orchestrator)
    for activity in (steady, flaky):
        worker.add_activity(activity)
    worker.add_entity(counter)
