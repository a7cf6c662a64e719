"""Loaded by the soak test's `sbworker run` (PYTHONPATH): every SOAK_PROBE_SECONDS, append the number of asyncio
tasks on the service's event loop to SOAK_PROBE_FILE. Without SOAK_PROBE_FILE it does nothing.

Task counts live only inside the process; this keeps the service itself unchanged and a real `python -m sbworker`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

_FILE = os.environ.get("SOAK_PROBE_FILE")


def _install(path: str, every: float) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            loops.append(loop)  # the first is the service's (asyncio.run in sbworker.cli)
            return loop

    asyncio.set_event_loop_policy(Policy())

    def count(loop: asyncio.AbstractEventLoop) -> None:
        with open(path, "a") as out:
            out.write(f"{time.time():.1f} {len(asyncio.all_tasks(loop))}\n")

    def sample() -> None:
        while True:
            time.sleep(every)
            if loops and loops[0].is_running():
                loops[0].call_soon_threadsafe(count, loops[0])

    threading.Thread(target=sample, name="soak-probe", daemon=True).start()


if _FILE:
    _install(_FILE, float(os.environ.get("SOAK_PROBE_SECONDS", "10")))
