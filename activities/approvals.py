"""Sending the approval request: the side effect a real system would email or post to chat."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)


class Outbox:
    """What was "sent", kept per instance for the newest `capacity` instances.

    A real deployment would call a mail or chat API here; we keep a bounded in-process record so tests and
    `make run` can show the request without any outside service. Records are looked up by instance id, so what one
    test (or workflow) reads never depends on how many requests others sent before it, up to `capacity` instances.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()  # activities run on the worker's thread pool
        self._sent: OrderedDict[str, list[Any]] = OrderedDict()

    def record(self, instance_id: str, request: Any) -> None:
        with self._lock:
            self._sent.setdefault(instance_id, []).append(request)
            self._sent.move_to_end(instance_id)
            while len(self._sent) > self.capacity:
                self._sent.popitem(last=False)

    def sent_for(self, instance_id: str) -> list[Any]:
        """Every request sent for this instance, oldest first (one per run of its first step)."""
        with self._lock:
            return list(self._sent.get(instance_id, ()))


OUTBOX = Outbox()


def send_approval_request(ctx: Any, request: Any) -> dict[str, Any]:
    """Record (and log) that approval was requested; returns what was sent so it shows in the history."""
    instance_id = str(getattr(ctx, "orchestration_id", None))
    OUTBOX.record(instance_id, request)
    log.info("approval requested for instance %s", instance_id)
    return {"instance_id": instance_id, "request": request}
