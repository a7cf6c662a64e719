"""The product's fixed vocabulary, defined once: dead-letter reasons, terminal statuses, exit codes, property names.

Everything that a user, an operator's alert rule or another process may match on lives here, so the listener,
the command line, the dashboard and the tests all spell it the same way.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final

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


#: Statuses after which an instance never changes again.
TERMINAL_STATUSES: Final = frozenset({
    OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED,
})


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
# Service Bus's own dead-letter properties, which a resubmitted copy must not carry.
DEAD_LETTER_PROPS: Final = frozenset({"DeadLetterReason", "DeadLetterErrorDescription", "DeadLetterSource"})
