"""A deliberately unreliable downstream service and the compensation that undoes its partial effects."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)

# Attempts seen per key. Failure is driven by the input, not by chance, so tests can make it fail exactly n times.
# A worker runs for months: only the most recently used keys are kept (an instance's retries are seconds apart,
# so a key is never dropped while its instance still counts on it).
MAX_TRACKED_KEYS = 10_000
_attempts: OrderedDict[str, int] = OrderedDict()
_lock = threading.Lock()


class ServiceUnavailableError(RuntimeError):
    """The downstream service refused the call (raised on purpose, as the input asked)."""


def unreliable_service(ctx: Any, request: Any) -> Any:
    """Fail `fail_times` times per `key` (or always with `always_fail`), then return `result`.

    Input (all optional): {"key": str, "fail_times": int, "always_fail": bool, "result": any}.
    The key defaults to the orchestration instance id, so each instance counts its own attempts.
    """
    options = request if isinstance(request, dict) else {}
    key = str(options.get("key") or getattr(ctx, "orchestration_id", "") or "default")
    with _lock:
        attempt = _attempts.pop(key, 0) + 1
        _attempts[key] = attempt
        while len(_attempts) > MAX_TRACKED_KEYS:
            _attempts.popitem(last=False)
    if options.get("always_fail") or attempt <= int(options.get("fail_times", 0)):
        log.info("unreliable_service failing attempt %d for %s", attempt, key)
        raise ServiceUnavailableError(f"service unavailable (attempt {attempt})")
    return options.get("result", f"Service succeeded after {attempt} attempt(s)")


def attempts(key: str) -> int:
    """How many times `unreliable_service` was called for `key` in this process."""
    with _lock:
        return _attempts.get(key, 0)


def compensation_activity(ctx: Any, request: Any) -> str:
    """Undo whatever the failed call may have done. Here: log it, and say so in the history."""
    instance_id = getattr(ctx, "orchestration_id", None)
    log.warning("compensating instance %s", instance_id)
    return f"Compensated {instance_id}"
