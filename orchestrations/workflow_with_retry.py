"""Retry with compensation: retry a flaky call durably, and undo its effects if it never succeeds."""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from durabletask import task

from activities.services import compensation_activity, unreliable_service

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(seconds=5)
MAX_ATTEMPTS = 3
BACKOFF = 2.0
MAX_INTERVAL = timedelta(seconds=60)


def retry_policy(request: Any) -> task.RetryPolicy:
    """The guide's policy; an input `retry` object may override it (tests shorten the intervals)."""
    overrides = request.get("retry") if isinstance(request, dict) else None
    o = overrides if isinstance(overrides, dict) else {}

    def number(key: str, default: float, low: float, high: float) -> float:
        value = o.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        return float(value) if ok else default

    return task.RetryPolicy(
        first_retry_interval=timedelta(seconds=number("first_retry_seconds", FIRST_RETRY.total_seconds(), 0, 3600)),
        max_number_of_attempts=int(number("max_attempts", MAX_ATTEMPTS, 1, 100)),
        backoff_coefficient=number("backoff", BACKOFF, 1, 10),
        max_retry_interval=timedelta(seconds=number("max_interval_seconds", MAX_INTERVAL.total_seconds(), 0, 3600)),
    )


def workflow_with_retry(ctx: task.OrchestrationContext, request: Any) -> Generator[task.Task[Any], Any, Any]:
    """Returns the service's result, or "Compensated" once every attempt failed."""
    try:
        result = yield ctx.call_activity(unreliable_service, input=request, retry_policy=retry_policy(request))
        return result
    except task.TaskFailedError as ex:
        message = ex.details.message or str(ex)
        if not ctx.is_replaying:
            log.warning("workflow_with_retry %s failed after retries: %s", ctx.instance_id, message)
        ctx.set_custom_status({"error": message})
        yield ctx.call_activity(compensation_activity, input=request)
        return "Compensated"
