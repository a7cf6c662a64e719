"""The product's fixed vocabulary, defined once: dead-letter reasons, terminal statuses, exit codes, property names.

Everything that a user, an operator's alert rule or another process may match on lives here, so the listener,
the command line, the dashboard and the tests all spell it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from durabletask.client import OrchestrationStatus


class Reason(StrEnum):
    """Dead-letter reason codes (`DeadLetterReason`). Members are ``str``, so they compare equal to their values."""

    # The message itself is unusable (see the README's message contract).
    TOO_LARGE = "TooLarge"
    UNKNOWN_SUBJECT = "UnknownSubject"
    UNSUPPORTED_CONTENT_TYPE = "UnsupportedContentType"
    INVALID_ENCODING = "InvalidEncoding"
    INVALID_JSON = "InvalidJson"
    SCHEMA_VIOLATION = "SchemaViolation"
    UNKNOWN_ORCHESTRATION = "UnknownOrchestration"
    MISSING_MESSAGE_ID = "MissingMessageId"
    UNSUPPORTED_BODY = "UnsupportedBody"
    UNDECODABLE_MESSAGE = "UndecodableMessage"
    MESSAGE_ID_TOO_LONG = "MessageIdTooLong"
    UNCOPYABLE_PROPERTIES = "UncopyableProperties"
    UNKNOWN_EVENT = "UnknownEvent"
    # The message is well formed but asks for more than the bounds allow (README "Limits").
    INSTANCE_ID_TOO_LONG = "InstanceIdTooLong"
    RESERVED_INSTANCE_ID = "ReservedInstanceId"
    INPUT_TOO_LARGE = "InputTooLarge"
    INPUT_OUT_OF_BOUNDS = "InputOutOfBounds"
    EVENT_TOO_LARGE = "EventTooLarge"
    INVALID_CLOUD_EVENT = "InvalidCloudEvent"
    # The message is fine, but its target is not.
    INSTANCE_NOT_FOUND = "InstanceNotFound"
    INSTANCE_NOT_RUNNING = "InstanceNotRunning"
    NOT_AN_APPROVAL_WORKFLOW = "NotAnApprovalWorkflow"


class AbandonReason(StrEnum):
    """Why a message was abandoned (given back to Service Bus, delivery count + 1) instead of settled for good."""

    DTS_UNAVAILABLE = "DtsUnavailable"  # DTS stayed unreachable for the whole transient-retry budget
    SHUTDOWN = "Shutdown"  # the grace period ended with the message still in hand
    UNEXPECTED_ERROR = "UnexpectedError"  # a bug of ours: logged with its traceback
    REENQUEUE_FAILED = "ReenqueueFailed"  # an early approval's scheduled copy could not be sent


if TYPE_CHECKING:
    #: Statuses after which an instance never changes again (built on first use: see __getattr__).
    TERMINAL_STATUSES: frozenset[OrchestrationStatus]


def __getattr__(name: str) -> Any:
    """TERMINAL_STATUSES holds the durabletask SDK's own members, so `state.runtime_status in TERMINAL_STATUSES`
    works; it is built when first imported, so that the commands that never read an instance (`--help`, a
    configuration error, `publish`) do not load the SDK and its gRPC stack (about 70 ms of every start)."""
    if name != "TERMINAL_STATUSES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from durabletask.client import OrchestrationStatus

    statuses = frozenset({OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED})
    globals()[name] = statuses
    return statuses


class Exit(IntEnum):
    """Process exit codes of every `sbworker` command."""

    OK = 0
    FAILED = 1  # the command ran, and the answer is "no" (instance missing, workflow failed, SDK error)
    USAGE = 2  # bad arguments or configuration: one line on stderr, nothing was done
    INTERRUPTED = 130


# The event approval_workflow waits for: an `approval` message raises it (the shorthand of subject `event`).
APPROVAL_EVENT: Final = "ApprovalEvent"
# Application properties the listener adds to a re-enqueued approval (see settlement.RetryLater): how often,
# and since when, it has waited for its instance. A resubmit from the DLQ strips them so the copy starts afresh.
PROP_RETRIES: Final = "sbworker-retries"
PROP_FIRST_ATTEMPT: Final = "sbworker-first-attempt"
# Marks a "confirm" copy (settlement.RetryLater.confirm): its event was raised, but the instance had not taken it
# within the confirmation bound. Its handling only reads the instance, and never raises the event again.
PROP_CONFIRM: Final = "sbworker-confirm"
# The orchestration tag naming the Service Bus message that started an instance (the dashboard links them).
TAG_MESSAGE_ID: Final = "sbworker.message_id"
# Set by sbworker.patches.amqp_decoding on a delivery the SDK could not decode (the value says what failed).
PROP_UNDECODABLE: Final = "x-sbworker-undecodable"
#: CloudEvents type -> the contract's subject it stands for (sbworker.core.cloudevents); settings
#: (CLOUDEVENTS_TYPES) add more, e.g. a Dapr topic's type.
CLOUDEVENT_TYPES: Final[Mapping[str, str]] = {
    "sbworker.start": "start", "sbworker.approval": "approval", "sbworker.event": "event",
}
# Service Bus's own dead-letter properties, which a resubmitted copy must not carry.
DEAD_LETTER_PROPS: Final = frozenset({"DeadLetterReason", "DeadLetterErrorDescription", "DeadLetterSource"})
