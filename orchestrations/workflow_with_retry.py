"""Retry with compensation: retry a flaky call durably, and undo its effects if it never succeeds.

Version "2" (every instance started through the queue since issue 23) hands each attempt only the few small
fields the service needs, so a large input sits in the history once instead of once per attempt, and it keeps
the retry overrides within RETRY_BOUNDS (the message contract refuses a message that asks for more). An instance
started without a version (before version "2" existed, or straight through a DTS client) runs the original steps,
unchanged, so its history replays exactly as it was written.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import timedelta
from typing import Any, Final, TypeGuard

from durabletask import task

from activities.services import compensation_activity, unreliable_service

log = logging.getLogger(__name__)

VERSION: Final = "2"

FIRST_RETRY = timedelta(seconds=5)
MAX_ATTEMPTS = 3
BACKOFF = 2.0
MAX_INTERVAL = timedelta(seconds=60)

#: What an input's `retry` overrides may ask for (version "2"): (default, lowest, highest, unit).
#: At most 10 attempts, none sooner than a second after the one before: a message cannot make one instance a hot
#: loop that fills its history.
RETRY_BOUNDS: Final[dict[str, tuple[float, float, float, str]]] = {
    "max_attempts": (MAX_ATTEMPTS, 1, 10, "attempts"),
    "first_retry_seconds": (FIRST_RETRY.total_seconds(), 1.0, 3600.0, "seconds"),
    "backoff": (BACKOFF, 1.0, 10.0, "(a factor)"),
    "max_interval_seconds": (MAX_INTERVAL.total_seconds(), 1.0, 3600.0, "seconds"),
}
#: The longest `key` an attempt is handed (it names the attempt counter; the instance id when absent).
MAX_KEY_LENGTH: Final = 256


def input_problem(request: Any) -> str | None:
    """Why the message contract refuses this input (naming the field, the bound and the value), or None."""
    if not isinstance(request, dict):
        return None
    key = request.get("key")
    if key is not None and not (isinstance(key, str) and len(key) <= MAX_KEY_LENGTH):
        shown = f"{len(key)} characters" if isinstance(key, str) else type(key).__name__
        return f"$.input.key: expected a string of at most {MAX_KEY_LENGTH} characters, got {shown}"
    overrides = request.get("retry")
    if overrides is None:
        return None
    if not isinstance(overrides, dict):
        return "$.input.retry: expected an object"
    problems = []
    for name, (_default, low, high, unit) in RETRY_BOUNDS.items():
        value = overrides.get(name)
        if value is None:
            continue
        if not _is_number(value):
            problems.append(f"$.input.retry.{name}: expected a number, got {type(value).__name__}")
        elif not low <= value <= high:
            problems.append(f"$.input.retry.{name}: {value:g} is out of bounds; "
                            f"the limit is {low:g} to {high:g} {unit}")
    return "; ".join(problems) or None


def retry_policy(request: Any) -> task.RetryPolicy:
    """Version "2": the guide's policy, with the input's `retry` overrides that lie within RETRY_BOUNDS."""
    overrides = request.get("retry") if isinstance(request, dict) else None
    o = overrides if isinstance(overrides, dict) else {}

    def value(name: str) -> float:
        default, low, high, _unit = RETRY_BOUNDS[name]
        given = o.get(name)
        return float(given) if _is_number(given) and low <= given <= high else float(default)

    return task.RetryPolicy(
        first_retry_interval=timedelta(seconds=value("first_retry_seconds")),
        max_number_of_attempts=int(value("max_attempts")),
        backoff_coefficient=value("backoff"),
        max_retry_interval=timedelta(seconds=value("max_interval_seconds")),
    )


def attempt_input(request: Any) -> dict[str, Any]:
    """What one attempt of the service needs: a few small fields, never the whole input (version "2")."""
    options = request if isinstance(request, dict) else {}
    small: dict[str, Any] = {}
    key = options.get("key")
    if isinstance(key, str) and key and len(key) <= MAX_KEY_LENGTH:
        small["key"] = key
    fail_times = options.get("fail_times")
    if isinstance(fail_times, int) and not isinstance(fail_times, bool):
        small["fail_times"] = fail_times
    if options.get("always_fail") is True:
        small["always_fail"] = True
    return small


def workflow_with_retry(ctx: task.OrchestrationContext, request: Any) -> Generator[task.Task[Any], Any, Any]:
    """Returns the input's `result` (else the service's answer) once a call succeeds, or "Compensated"."""
    if ctx.version != VERSION:
        return (yield from _version_1(ctx, request))
    options = attempt_input(request)
    try:
        answer = yield ctx.call_activity(unreliable_service, input=options, retry_policy=retry_policy(request))
    except task.TaskFailedError as ex:
        yield from _compensate(ctx, ex, options)
        return "Compensated"
    return request["result"] if isinstance(request, dict) and "result" in request else answer


def _compensate(ctx: task.OrchestrationContext, ex: task.TaskFailedError, options: Any
                ) -> Generator[task.Task[Any], Any, None]:
    message = ex.details.message or str(ex)
    if not ctx.is_replaying:
        log.warning("workflow_with_retry %s failed after retries: %s", ctx.instance_id, message)
    ctx.set_custom_status({"error": message})
    yield ctx.call_activity(compensation_activity, input=options)


# --- version 1: instances started before version "2"; kept exactly as it ran, so their histories replay --------


def _version_1_policy(request: Any) -> task.RetryPolicy:
    overrides = request.get("retry") if isinstance(request, dict) else None
    o = overrides if isinstance(overrides, dict) else {}

    def number(key: str, default: float, low: float, high: float) -> float:
        value = o.get(key, default)
        ok = _is_number(value) and low <= value <= high
        return float(value) if ok else default

    return task.RetryPolicy(
        first_retry_interval=timedelta(seconds=number("first_retry_seconds", FIRST_RETRY.total_seconds(), 0, 3600)),
        max_number_of_attempts=int(number("max_attempts", MAX_ATTEMPTS, 1, 100)),
        backoff_coefficient=number("backoff", BACKOFF, 1, 10),
        max_retry_interval=timedelta(seconds=number("max_interval_seconds", MAX_INTERVAL.total_seconds(), 0, 3600)),
    )


def _version_1(ctx: task.OrchestrationContext, request: Any) -> Generator[task.Task[Any], Any, Any]:
    try:
        result = yield ctx.call_activity(unreliable_service, input=request, retry_policy=_version_1_policy(request))
        return result
    except task.TaskFailedError as ex:
        yield from _compensate(ctx, ex, request)
        return "Compensated"


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
