"""The settlement policy: `decide`, one pure function, and the retry bookkeeping a re-enqueued copy carries (an
early event waiting for its instance, or a confirm copy waiting for its raised event to be taken).

Every row of the README's settlement table is one branch of `decide`, and a unit test pins each. The receiver
only applies the Action it returns (receiver.Settler).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from listener.dispatch import (
    AlreadyApplied,
    AlreadyExists,
    EventNotAwaited,
    InstanceGone,
    InstanceNotFound,
    InstanceNotRunning,
    NotAnApprovalWorkflow,
    Outcome,
    Pending,
    Raised,
    Started,
    TransientFailure,
)
from sbworker.core import messages
from sbworker.core.codes import PROP_CONFIRM, PROP_FIRST_ATTEMPT, PROP_RETRIES, AbandonReason, Reason
from sbworker.core.contract import ApprovalRequest, Invalid, Request

# Backoff for an approval that arrived before its start: 1 s, 2 s, 4 s … capped, until the window closes.
NOT_FOUND_FIRST_DELAY = 1.0
NOT_FOUND_MAX_DELAY = 30.0
# The Service Bus SDKs refuse to send a message id longer than this, so such an approval cannot be re-enqueued.
MAX_REENQUEUE_MESSAGE_ID = 128
# A forged or corrupted first-attempt time is ignored unless it lies this close to what is possible (see
# RetryHistory.of): a copy can then never wait longer than one window after its own enqueue.
CLOCK_SKEW_SECONDS = 60.0


@dataclass(frozen=True)
class Complete:
    note: str  # "started", "duplicate", "raised", "unconfirmed"
    warning: str = ""  # why completing is not the whole story: logged as a WARNING


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    description: str


@dataclass(frozen=True)
class Abandon:
    reason: AbandonReason
    detail: str = ""  # what happened, for the log line (the reason alone is the metric label)


@dataclass(frozen=True)
class RetryLater:
    """Re-enqueue a copy after `delay` seconds and complete this one: no lock held, no slot idle, no hot loop."""

    delay: float
    attempt: int  # 1 for the first re-enqueue
    reason: str
    confirm: bool = False  # a confirm copy: its event was raised, and the copy only reads what became of it


Action = Complete | DeadLetter | Abandon | RetryLater


def decide(
    parsed: Request | Invalid,
    outcome: Outcome | None,
    *,
    retries_so_far: int = 0,
    seconds_since_first_attempt: float = 0.0,
    not_found_window: float = 300.0,
    message_id_length: int = 0,
    uncopyable: str | None = None,
) -> Action:
    """What to do with a message, given what it said and what DTS answered; `uncopyable` says why a copy of it
    could not be sent (messages.uncopyable), which an early event's wait needs."""
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
        case InstanceNotRunning(instance_id=iid, status=status, raised=True):
            return DeadLetter(Reason.INSTANCE_NOT_RUNNING,
                              f"instance {iid!r} is {status}; {_what(parsed)} was raised while it ran but never "
                              f"processed: the instance ended first")
        case InstanceNotRunning(instance_id=iid, status=status):
            return DeadLetter(Reason.INSTANCE_NOT_RUNNING,
                              f"instance {iid!r} is {status}; {_what(parsed)} came too late")
        case InstanceGone(instance_id=iid):
            return DeadLetter(Reason.INSTANCE_NOT_FOUND,
                              f"instance {iid!r} no longer exists: {_what(parsed)} was raised while it ran, and it "
                              f"was purged before its history showed whether it was processed")
        case Pending(instance_id=iid) if message_id_length > MAX_REENQUEUE_MESSAGE_ID or uncopyable:
            return Complete("unconfirmed", f"{_what(parsed)} raised at instance {iid!r} is still pending, and this "
                                           f"message cannot be copied to confirm it later")
        case Pending(instance_id=iid):
            remaining = not_found_window - seconds_since_first_attempt
            if remaining <= 0:
                return Complete("unconfirmed", f"{_what(parsed)} raised at instance {iid!r} is still pending after "
                                               f"{seconds_since_first_attempt:.0f}s (window {not_found_window:.0f}s, "
                                               f"{retries_so_far} confirmations); the instance takes it when its "
                                               f"worker returns, unless it ends first")
            return RetryLater(min(_backoff(retries_so_far), remaining), retries_so_far + 1,
                              f"the event raised at instance {iid!r} is still pending", confirm=True)
        case NotAnApprovalWorkflow(instance_id=iid, name=name):
            return DeadLetter(Reason.NOT_AN_APPROVAL_WORKFLOW,
                              f"instance {iid!r} is a {name!r}, which does not wait for approvals")
        case EventNotAwaited(instance_id=iid, name=name, event=event, awaited=awaited):
            waits = f"it waits for {', '.join(awaited)}" if awaited else "it waits for no events"
            return DeadLetter(Reason.UNKNOWN_EVENT,
                              f"instance {iid!r} is a {name!r}, which does not wait for {event!r}; {waits}")
        case InstanceNotFound(instance_id=iid) if message_id_length > MAX_REENQUEUE_MESSAGE_ID:
            return DeadLetter(Reason.MESSAGE_ID_TOO_LONG,
                              f"no instance {iid!r} yet, and the message id is {message_id_length} characters: "
                              f"it cannot wait for one (re-enqueued ids are limited to {MAX_REENQUEUE_MESSAGE_ID})")
        case InstanceNotFound(instance_id=iid) if uncopyable:
            return DeadLetter(Reason.UNCOPYABLE_PROPERTIES,
                              f"no instance {iid!r} yet, and it cannot wait for one in a re-enqueued copy: "
                              f"{uncopyable}")
        case InstanceNotFound(instance_id=iid):
            remaining = not_found_window - seconds_since_first_attempt
            if remaining <= 0:
                return DeadLetter(
                    Reason.INSTANCE_NOT_FOUND,
                    f"no instance {iid!r} after {seconds_since_first_attempt:.0f}s "
                    f"(window {not_found_window:.0f}s, {retries_so_far} retries)",
                )
            return RetryLater(min(_backoff(retries_so_far), remaining), retries_so_far + 1,
                              f"instance {iid!r} not found yet")
        case TransientFailure(error=error):
            return Abandon(AbandonReason.DTS_UNAVAILABLE, error)
    raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover


def _backoff(retries_so_far: int) -> float:
    # The exponent is capped: 2.0 ** 1024 overflows, and the cap is reached long before that anyway.
    return min(NOT_FOUND_MAX_DELAY, NOT_FOUND_FIRST_DELAY * 2.0 ** min(retries_so_far, 16))


def is_confirm_copy(message: Any) -> bool:
    """A confirm copy (RetryLater.confirm): its handling must only read the instance, never raise again."""
    return messages.prop(message, PROP_CONFIRM) is not None


@dataclass(frozen=True)
class RetryHistory:
    """How often, and since when, a message has waited in re-enqueued copies (the properties its copies carry): an
    early event for its instance, or a confirm copy for its raised event to be taken. Each wait has its own clock
    and window: an early event that waited for its instance and then found it pending starts a confirmation."""

    retries: int
    first_attempt: datetime
    confirm: bool = False

    @classmethod
    def of(cls, message: Any, window: float, now: datetime, *, confirm: bool = False) -> RetryHistory:
        """Read from the message's properties, trusted only within what the protocol allows; `confirm` asks for
        the confirmation's history, which starts now unless the message is a confirm copy already.

        The window counts from the listener's first attempt, not from publication: after an outage longer than the
        window, an event that sat in the backlog beside its start still gets the whole window (counted from its
        enqueue time, it was dead-lettered on its first attempt, while its start was a moment away). A message
        without a history is that first attempt (`now`).

        A copy is re-enqueued only while its window is open, with a delay of at most NOT_FOUND_MAX_DELAY (+20%
        jitter), so its first attempt lies between (its enqueue time - window - that delay) and its enqueue time.
        A value outside (a publisher's year 9999, a corrupted string) is ignored and the clock starts at this
        attempt; a retry count that is not a small non-negative integer counts as none.
        """
        if confirm and not is_confirm_copy(message):
            return cls(0, now, confirm=True)
        raw_retries = messages.prop(message, PROP_RETRIES)
        retries = (raw_retries if isinstance(raw_retries, int) and not isinstance(raw_retries, bool)
                   and 0 <= raw_retries < 10_000 else 0)
        enqueued = message.enqueued_time_utc or now
        enqueued = enqueued if enqueued.tzinfo else enqueued.replace(tzinfo=UTC)
        first = now
        raw = messages.prop(message, PROP_FIRST_ATTEMPT)
        if isinstance(raw, str) and len(raw) <= 64:
            try:
                claimed = datetime.fromisoformat(raw)
            except ValueError:
                claimed = None
            if claimed is not None and claimed.tzinfo is not None:
                earliest = enqueued - timedelta(seconds=window + 1.2 * NOT_FOUND_MAX_DELAY + CLOCK_SKEW_SECONDS)
                if earliest <= claimed <= enqueued + timedelta(seconds=CLOCK_SKEW_SECONDS):
                    first = claimed
        return cls(retries, first, confirm=confirm)

    def seconds_since_first(self, now: datetime) -> float:
        return max(0.0, (now - self.first_attempt).total_seconds())

    def properties(self, attempt: int) -> dict[str | bytes, Any]:
        """What a re-enqueued copy carries for its next attempt (`RetryLater.attempt`)."""
        written: dict[str | bytes, Any] = {PROP_RETRIES: attempt, PROP_FIRST_ATTEMPT: self.first_attempt.isoformat()}
        if self.confirm:
            written[PROP_CONFIRM] = True
        return written


def _what(parsed: Request) -> str:
    return "the approval" if isinstance(parsed, ApprovalRequest) else f"the event {getattr(parsed, 'event_name', '?')}"
