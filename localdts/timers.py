"""One thread for every due time (durable timers, scheduled starts), instead of a sleeping thread per timer.

A 3-day approval timer then costs a heap entry, not a thread, and the whole set can be stopped and started
with the backend. Callbacks run on the timer thread, one at a time, outside any lock of the caller.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("localdts.timers")


class TimerQueue:
    """Run callbacks at (wall-clock) epoch seconds; entries added while stopped wait for the next start."""

    def __init__(self, name: str = "localdts-timers") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, when: float, callback: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), callback))
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            thread = self._thread
            self._stopping = True
            self._cond.notify()
        if thread is not None:
            thread.join(10)
        with self._cond:
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.time()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    # Wake at least every second: the wall clock may jump, and a condition wait does not notice.
                    wait = min(1.0, self._heap[0][0] - now) if self._heap else 1.0
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # a failing timer must not stop every other timer
                log.exception("timer callback failed")
