"""The one gate on the SDK internals that :class:`~localdts.backend.DurableBackend` builds on.

DurableBackend extends ``durabletask.testing.InMemoryOrchestrationBackend`` by overriding private hooks that the
SDK's own code calls (``_enqueue_orchestration`` after every change, ``_process_*_action`` per orchestrator
action, ...) and by reading its private state. A release that renames a hook would not break anything loudly:
the SDK would simply stop calling our override, and durability, scheduled starts or trace context would be gone.
So, before a backend is built:

- a hook or a piece of state that is missing, or a hook whose parameters changed, is refused
  (:class:`SdkChanged`, one line; ``sbworker dts`` exits 2);
- a version other than those verified (``VERIFIED_VERSIONS``) logs one WARNING line: the hooks are still there,
  but what the SDK does around them has not been read again.

``tests/localdts/test_sdk_hooks.py`` checks that the SDK still calls every override, and fails on an unverified
version, so that an upgrade cannot skip reading the backend again.
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger("localdts.sdkcheck")

# The durabletask releases whose in-memory backend these hooks were read against (and the tests run with).
VERIFIED_VERSIONS = ("1.12.",)

# Private methods of the SDK backend that DurableBackend overrides or calls, with their parameters.
HOOKS: dict[str, tuple[str, ...]] = {
    "_enqueue_orchestration": ("self", "instance_id"),
    "_notify_waiters": ("self", "instance_id"),
    "_create_instance_internal": ("self", "instance_id", "name", "encoded_input", "version"),
    "_watch_sub_orchestration": ("self", "parent_instance_id", "sub_instance_id", "task_id"),
    "_process_create_timer_action": ("self", "instance", "action"),
    "_process_schedule_task_action": ("self", "instance", "action"),
    "_process_create_sub_orchestration_action": ("self", "instance", "action"),
    "_process_complete_orchestration_action": ("self", "instance", "complete_action"),
    "_build_instance_response": ("self", "instance", "include_payloads"),
    # Work item filters, read for the suspects DurableBackend offers alone (its own dispatch).
    "_parse_work_item_filters": ("request",),
    "_matches_filter": ("name", "version", "filt"),
}
# Which of them DurableBackend overrides (the SDK must keep calling these for them to have any effect).
OVERRIDDEN = tuple(name for name in HOOKS
                   if name not in ("_build_instance_response", "_parse_work_item_filters", "_matches_filter"))

# Private state of the SDK backend that DurableBackend reads or changes.
STATE = (
    "_lock", "_instances", "_activity_queue", "_orchestration_in_flight", "_state_waiters", "_work_available",
    "_next_completion_token", "_port", "_server", "_shutdown_event", "_entities", "_entity_in_flight",
    "_entity_queue_set", "_orchestration_queue", "_orchestration_queue_set",
)

_warned = False


class SdkChanged(RuntimeError):
    """The installed durabletask no longer has what DurableBackend builds on; the message is one line."""


def sdk_version() -> str:
    try:
        return version("durabletask")
    except PackageNotFoundError:
        return "unknown"


def verified(sdk: str | None = None) -> bool:
    return (sdk or sdk_version()).startswith(VERIFIED_VERSIONS)


def problems(base: type, backend: object | None = None) -> list[str]:
    """What ``base`` (and a constructed ``backend``) lacks of the hooks and state DurableBackend relies on."""
    found: list[str] = []
    for name, expected in HOOKS.items():
        method = getattr(base, name, None)
        if method is None:
            found.append(f"{name} is gone")
            continue
        params = tuple(inspect.signature(method).parameters)
        if params != expected:
            found.append(f"{name}{params} is not {name}{expected}")
    if backend is not None:
        found.extend(f"{name} is gone" for name in STATE if not hasattr(backend, name))
    return found


def check(base: type, backend: object | None = None) -> None:
    """Raise :class:`SdkChanged` if a hook or state is missing; warn (once) on an unverified version."""
    global _warned
    sdk = sdk_version()
    found = problems(base, backend)
    if found:
        raise SdkChanged(f"durabletask {sdk} changed its in-memory backend, which localdts builds on "
                         f"({'; '.join(found)}); install a verified version ({_verified_text()})")
    if not verified(sdk) and not _warned:
        _warned = True
        log.warning("durabletask %s is not a version localdts was verified with (%s): its in-memory backend still "
                    "has the hooks localdts overrides, but re-run tests/localdts before relying on it",
                    sdk, _verified_text())


def _verified_text() -> str:
    return ", ".join(v + "x" for v in VERIFIED_VERSIONS)
