"""Run the service on the event loop its settings name (EVENT_LOOP): uvloop, or asyncio's own.

Why uvloop: from a backlog the listener is CPU-bound, and a sixth of its samples were asyncio's own machinery
(the selector, callback handles, socket transports), which uvloop runs in C; the SDKs above it (azure-servicebus's
aio client, grpc.aio) use only the public loop API, so nothing else changes. README "Performance" has the figures.
Only the loop that `run` creates is replaced: threads that make loops of their own (the durabletask worker's) keep
asyncio's, as does anything that calls `asyncio.run` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: str) -> T:
    """`asyncio.run(main)` on a loop of `kind` ("uvloop" or "asyncio", as `sbworker.core.config` resolved it)."""
    if kind == "uvloop":
        import uvloop  # resolved as installed by the settings

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def running_kind() -> str:
    """Which loop runs the calling coroutine: "uvloop" or "asyncio" (for the start-up line and /readyz)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
