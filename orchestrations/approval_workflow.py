"""Human interaction: ask for approval, then wait for a person's decision raced against a durable timer."""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

from durabletask import task

from activities.approvals import send_approval_request
from sbworker.core.codes import APPROVAL_EVENT as APPROVAL_EVENT  # re-exported: the workflow's own event

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(days=3)


def parse_decision(data: Any) -> dict[str, Any] | None:
    """Accept `{"approved": bool, "approver": str, "comment": str?}` or a bare boolean; None if neither."""
    if isinstance(data, bool):
        return {"approved": data, "approver": None, "comment": None}
    if isinstance(data, dict) and isinstance(data.get("approved"), bool):
        approver = data.get("approver")
        comment = data.get("comment")
        return {
            "approved": data["approved"],
            "approver": approver if isinstance(approver, str) else None,
            "comment": comment if isinstance(comment, str) else None,
        }
    return None


def utc_iso(moment: datetime) -> str:
    """The orchestration clock is naive UTC; say so in what people read."""
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def timeout_of(request: Any) -> timedelta:
    """The input may shorten (or lengthen) the 3-day wait with `timeout_seconds`."""
    if isinstance(request, dict):
        seconds = request.get("timeout_seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 < seconds <= 366 * 24 * 3600:
            return timedelta(seconds=seconds)
    return DEFAULT_TIMEOUT


def approval_workflow(ctx: task.OrchestrationContext, request: Any) -> Generator[task.Task[Any], Any, str]:
    """Returns "Approved", "Rejected" or "Timed out"; the custom status always says where it stands."""
    yield ctx.call_activity(send_approval_request, input=request)
    deadline = ctx.current_utc_datetime + timeout_of(request)
    ctx.set_custom_status({"stage": "awaiting_approval", "expires_at": utc_iso(deadline)})
    if not ctx.is_replaying:
        log.info("approval_workflow %s waiting for %s until %s", ctx.instance_id, APPROVAL_EVENT, deadline)
    timer = ctx.create_timer(deadline)
    while True:
        event = ctx.wait_for_external_event(APPROVAL_EVENT)
        winner = yield task.when_any([event, timer])
        if winner is timer:
            ctx.set_custom_status({"stage": "timed_out", "expired_at": utc_iso(deadline)})
            return "Timed out"
        decision = parse_decision(event.get_result())
        if decision is None:
            # A malformed event must neither approve nor end the wait: note it and keep waiting.
            if not ctx.is_replaying:
                log.warning("approval_workflow %s ignored a malformed %s", ctx.instance_id, APPROVAL_EVENT)
            ctx.set_custom_status(
                {"stage": "awaiting_approval", "expires_at": utc_iso(deadline), "ignored_malformed_event": True}
            )
            continue
        outcome = "Approved" if decision["approved"] else "Rejected"
        ctx.set_custom_status({"stage": "decided", "outcome": outcome, **decision})
        if not ctx.is_replaying:
            log.info("approval_workflow %s %s by %s", ctx.instance_id, outcome.lower(), decision["approver"])
        return outcome
