"""Sending the approval request: the side effect a real system would email or post to chat."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: What was "sent", newest last. A real deployment would call a mail or chat API here; we keep a bounded
#: in-process record so tests and `make run` can show the request without any outside service.
SENT_REQUESTS: list[dict[str, Any]] = []
_MAX_RECORDED = 1000


def send_approval_request(ctx: Any, request: Any) -> dict[str, Any]:
    """Record (and log) that approval was requested; returns what was sent so it shows in the history."""
    instance_id = getattr(ctx, "orchestration_id", None)
    record = {"instance_id": instance_id, "request": request}
    SENT_REQUESTS.append(record)
    del SENT_REQUESTS[:-_MAX_RECORDED]
    log.info("approval requested for instance %s", instance_id)
    return record
