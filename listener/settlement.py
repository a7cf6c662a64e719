"""The settlement policy, in one pure function.

Every row of the README's settlement table is one branch of `decide`, and a unit test pins each. The receiver
and `settle` are thin shells around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from listener.dispatch import (
    AlreadyApplied,
    AlreadyExists,
    InstanceNotFound,
    InstanceNotRunning,
    NotAnApprovalWorkflow,
    Outcome,
    Raised,
    Started,
    TransientFailure,
)
from sbworker.core.codes import Reason
from sbworker.core.contract import ApprovalRequest, Invalid, StartRequest

# Backoff for an approval that arrived before its start: 1 s, 2 s, 4 s … capped, until the window closes.
NOT_FOUND_FIRST_DELAY = 1.0
NOT_FOUND_MAX_DELAY = 30.0
# The Service Bus SDKs refuse to send a message id longer than this, so such an approval cannot be re-enqueued.
MAX_REENQUEUE_MESSAGE_ID = 128


@dataclass(frozen=True)
class Complete:
    note: str  # "started", "duplicate", "raised"


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    description: str


@dataclass(frozen=True)
class Abandon:
    reason: str


@dataclass(frozen=True)
class RetryLater:
    """Re-enqueue a copy after `delay` seconds and complete this one: no lock held, no slot idle, no hot loop."""

    delay: float
    attempt: int  # 1 for the first re-enqueue
    reason: str


Action = Complete | DeadLetter | Abandon | RetryLater


def decide(
    parsed: StartRequest | ApprovalRequest | Invalid,
    outcome: Outcome | None,
    *,
    retries_so_far: int = 0,
    seconds_since_first_attempt: float = 0.0,
    not_found_window: float = 300.0,
    message_id_length: int = 0,
) -> Action:
    """What to do with a message, given what it said and what DTS answered."""
    if isinstance(parsed, Invalid):
        return DeadLetter(parsed.reason, parsed.description)
    if outcome is None:
        raise ValueError("a valid request needs a DTS outcome")
    match outcome:
        case Started():
            return Complete("started")
        case AlreadyExists():
            return Complete("duplicate")
        case Raised():
            return Complete("raised")
        case AlreadyApplied():
            return Complete("duplicate")
        case InstanceNotRunning(instance_id=iid, status=status):
            return DeadLetter(Reason.INSTANCE_NOT_RUNNING, f"instance {iid!r} is {status}; the approval came too late")
        case NotAnApprovalWorkflow(instance_id=iid, name=name):
            return DeadLetter(Reason.NOT_AN_APPROVAL_WORKFLOW,
                              f"instance {iid!r} is a {name!r}, which does not wait for approvals")
        case InstanceNotFound(instance_id=iid) if message_id_length > MAX_REENQUEUE_MESSAGE_ID:
            return DeadLetter(Reason.MESSAGE_ID_TOO_LONG,
                              f"no instance {iid!r} yet, and the message id is {message_id_length} characters: "
                              f"it cannot wait for one (re-enqueued ids are limited to {MAX_REENQUEUE_MESSAGE_ID})")
        case InstanceNotFound(instance_id=iid):
            # The exponent is capped: 2.0 ** 1024 overflows, and the cap is reached long before that anyway.
            delay = min(NOT_FOUND_MAX_DELAY, NOT_FOUND_FIRST_DELAY * 2.0 ** min(retries_so_far, 16))
            remaining = not_found_window - seconds_since_first_attempt
            if remaining <= 0:
                return DeadLetter(
                    Reason.INSTANCE_NOT_FOUND,
                    f"no instance {iid!r} after {seconds_since_first_attempt:.0f}s "
                    f"(window {not_found_window:.0f}s, {retries_so_far} retries)",
                )
            return RetryLater(min(delay, remaining), retries_so_far + 1, f"instance {iid!r} not found yet")
        case TransientFailure(error=error):
            return Abandon(f"DTS unavailable: {error}")
    raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover
