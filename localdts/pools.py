"""Short gRPC calls on a small thread pool of their own; streams and waits on the big one.

Why: the big pool must be big (every worker's ``GetWorkItems`` stream and every ``WaitForInstance*`` call holds
a thread for as long as it lasts), but 64 threads taking turns at short calls cost far more than the calls: each
call wakes an idle thread, and they all queue for the GIL (measured, 3,000 starts with 64 in flight: 11 context
switches per start against 5-8 with 8 threads for short calls; ``--memory`` went from 0.78x the SDK's backend,
which has 10 threads, to 0.93x). With a few threads, a thread that finishes a call finds the next one queued and
takes it without sleeping. More than 8 did not help durable mode (its batches are no bigger), 4 hurt it.

This uses grpc's ``experimental_thread_pool`` attribute of a method handler's behaviour. Should a grpc release
drop it, every call runs on the big pool again: slower, not wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

DEFAULT_CALL_WORKERS = 8

# Unary calls that never wait for anything but the backend lock (and, when durable, their own commit). Whatever
# is not listed (streams, WaitForInstanceStart/Completion, methods added by a later SDK) stays on the big pool,
# so that a waiting call can never hold up the calls it waits for.
SHORT_CALLS = frozenset({
    "Hello", "StartInstance", "GetInstance", "RaiseEvent", "TerminateInstance", "SuspendInstance",
    "ResumeInstance", "PurgeInstances", "RestartInstance", "RewindInstance", "ListInstanceIds", "QueryInstances",
    "CompleteOrchestratorTask", "CompleteActivityTask", "CompleteEntityTask", "AbandonTaskActivityWorkItem",
    "AbandonTaskOrchestratorWorkItem", "AbandonTaskEntityWorkItem", "SignalEntity", "GetEntity", "QueryEntities",
    "CleanEntityStorage", "CreateTaskHub", "DeleteTaskHub",
})


class OnCallPool:
    """The servicer as the generated ``add_..._to_server`` sees it: short calls carry the call pool with them."""

    def __init__(self, servicer: object, call_pool: futures.ThreadPoolExecutor) -> None:
        self._servicer = servicer
        self._call_pool = call_pool

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._servicer, name)
        if name not in SHORT_CALLS:
            return method
        return _on_pool(method, self._call_pool)


def _on_pool(method: Callable[[Any, Any], Any], pool: futures.ThreadPoolExecutor) -> Callable[[Any, Any], Any]:
    def behaviour(request: Any, context: Any) -> Any:
        return method(request, context)
    behaviour.experimental_thread_pool = pool  # type: ignore[attr-defined]
    behaviour.__name__ = getattr(method, "__name__", "behaviour")
    return behaviour
