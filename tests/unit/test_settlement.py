"""One test per row of the settlement table: the whole policy is `decide`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

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
from listener.settlement import Abandon, Complete, DeadLetter, RetryHistory, RetryLater, decide, is_confirm_copy
from sbworker.core.codes import PROP_CONFIRM, PROP_FIRST_ATTEMPT, PROP_RETRIES, AbandonReason
from sbworker.core.contract import ApprovalRequest, EventRequest, Invalid, StartRequest

START = StartRequest(orchestration="hello_cities", instance_id="i1", input=None, start_at=None,
                     instance_id_from_message=True)
APPROVAL = ApprovalRequest(instance_id="i1", approved=True, approver="ada", comment=None)
EVENT = EventRequest(instance_id="i1", name="PaymentReceived", data={"amount_cents": 1, "currency": "EUR",
                                                                   "reference": "r"})


def test_start_accepted_completes() -> None:
    assert decide(START, Started("i1")) == Complete("started")


def test_duplicate_start_completes_as_duplicate() -> None:
    assert decide(START, AlreadyExists("i1")) == Complete("duplicate")


def test_approval_accepted_completes() -> None:
    assert decide(APPROVAL, Raised("i1")) == Complete("raised")


def test_approval_for_finished_instance_is_dead_lettered() -> None:
    action = decide(APPROVAL, InstanceNotRunning("i1", "COMPLETED"))
    assert isinstance(action, DeadLetter)
    assert action.reason == "InstanceNotRunning" and "'i1' is COMPLETED" in action.description


def test_approval_before_start_is_retried_later_with_growing_delay() -> None:
    delays = []
    for retries in range(8):
        action = decide(APPROVAL, InstanceNotFound("i1"), retries_so_far=retries, seconds_since_first_attempt=1.0,
                        not_found_window=300)
        assert isinstance(action, RetryLater) and action.attempt == retries + 1
        delays.append(action.delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_retry_delay_never_overshoots_the_window() -> None:
    action = decide(APPROVAL, InstanceNotFound("i1"), retries_so_far=10, seconds_since_first_attempt=295,
                    not_found_window=300)
    assert isinstance(action, RetryLater) and action.delay == pytest.approx(5)


def test_approval_not_found_after_the_window_is_dead_lettered() -> None:
    action = decide(APPROVAL, InstanceNotFound("i1"), retries_so_far=9, seconds_since_first_attempt=301,
                    not_found_window=300)
    assert isinstance(action, DeadLetter)
    assert action.reason == "InstanceNotFound" and "'i1'" in action.description and "9 retries" in action.description


def test_zero_window_dead_letters_at_once() -> None:
    action = decide(APPROVAL, InstanceNotFound("i1"), not_found_window=0)
    assert isinstance(action, DeadLetter) and action.reason == "InstanceNotFound"


def test_invalid_message_is_dead_lettered_with_its_reason() -> None:
    assert decide(Invalid("SchemaViolation", "$.approved: expected boolean"), None) == DeadLetter(
        "SchemaViolation", "$.approved: expected boolean"
    )


def test_transient_failure_abandons_for_redelivery() -> None:
    action = decide(START, TransientFailure("UNAVAILABLE: connection refused"))
    assert action == Abandon(AbandonReason.DTS_UNAVAILABLE, "UNAVAILABLE: connection refused")


def test_valid_request_without_outcome_is_a_bug() -> None:
    with pytest.raises(ValueError):
        decide(START, None)


def test_redelivered_approval_already_applied_completes_as_duplicate() -> None:
    assert decide(APPROVAL, AlreadyApplied("i1")) == Complete("duplicate")


def test_very_many_retries_do_not_overflow() -> None:
    action = decide(APPROVAL, InstanceNotFound("i1"), retries_so_far=5000, seconds_since_first_attempt=10,
                    not_found_window=86400)
    assert isinstance(action, RetryLater) and action.delay == 30


def test_approval_for_an_instance_of_another_workflow_is_dead_lettered() -> None:
    action = decide(APPROVAL, NotAnApprovalWorkflow("i1", "hello_cities"))
    assert isinstance(action, DeadLetter)
    assert action.reason == "NotAnApprovalWorkflow" and "'hello_cities'" in action.description


def test_approval_waiting_for_its_instance_with_an_id_too_long_to_re_enqueue_is_dead_lettered_at_once() -> None:
    action = decide(APPROVAL, InstanceNotFound("i1"), message_id_length=129)
    assert isinstance(action, DeadLetter) and action.reason == "MessageIdTooLong" and "129" in action.description
    assert isinstance(decide(APPROVAL, InstanceNotFound("i1"), message_id_length=128), RetryLater)


def test_approval_waiting_for_its_instance_that_cannot_be_copied_is_dead_lettered_at_once() -> None:
    why = "its application property 'n' is an integer past 32 bits (1099511627776), which …"
    action = decide(APPROVAL, InstanceNotFound("i1"), uncopyable=why)
    assert isinstance(action, DeadLetter) and action.reason == "UncopyableProperties" and why in action.description
    assert isinstance(decide(APPROVAL, InstanceNotFound("i1"), uncopyable=None), RetryLater)


class Received:
    """The two fields of a received message that the retry bookkeeping reads."""

    def __init__(self, enqueued: datetime | None, properties: dict[Any, Any]) -> None:
        self.enqueued_time_utc = enqueued
        self.application_properties = properties


NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_retry_history_reads_what_an_earlier_copy_wrote() -> None:
    first = NOW - timedelta(seconds=40)
    written = RetryHistory(3, first).properties(4)
    assert written == {PROP_RETRIES: 4, PROP_FIRST_ATTEMPT: first.isoformat()}
    history = RetryHistory.of(Received(NOW - timedelta(seconds=1), written), window=300, now=NOW)
    assert history == RetryHistory(4, first) and history.seconds_since_first(NOW) == 40


@pytest.mark.parametrize("claimed", ["9999-01-01T00:00:00+00:00", "2026-12-06T10:00:00+00:00", "2026-12-06T11:59:00",
                                     "not a time", "x" * 100])
def test_a_first_attempt_the_protocol_cannot_have_written_is_ignored(claimed: str) -> None:
    """Year 9999, two hours back (before the window could have started), a naive time, garbage: the clock starts
    at this attempt, so no copy waits longer than one window after it was enqueued."""
    enqueued = NOW - timedelta(seconds=5)
    history = RetryHistory.of(Received(enqueued, {PROP_FIRST_ATTEMPT.encode(): claimed.encode()}), 300, NOW)
    assert history.first_attempt == NOW


def test_the_window_counts_from_the_first_attempt_not_from_publication() -> None:
    """An approval that waited in a backlog longer than the window (an outage), beside its start: on its first
    attempt it is re-enqueued to wait for the instance, not dead-lettered."""
    published = NOW - timedelta(seconds=900)
    history = RetryHistory.of(Received(published, {}), 300, NOW)
    assert history == RetryHistory(0, NOW) and history.seconds_since_first(NOW) == 0
    action = decide(APPROVAL, InstanceNotFound("i1"), retries_so_far=history.retries,
                    seconds_since_first_attempt=history.seconds_since_first(NOW), not_found_window=300)
    assert isinstance(action, RetryLater) and action.delay == 1.0


@pytest.mark.parametrize("retries", [True, -1, 10_000, "3", 2.5])
def test_a_retry_count_that_is_not_a_small_integer_counts_as_none(retries: Any) -> None:
    assert RetryHistory.of(Received(NOW, {PROP_RETRIES: retries}), 300, NOW).retries == 0


# --- declared events: the same rows as approvals ----------------------------------------------------------


def test_event_accepted_completes() -> None:
    assert decide(EVENT, Raised("i1")) == Complete("raised")


def test_event_before_its_instance_is_retried_later() -> None:
    action = decide(EVENT, InstanceNotFound("i1"), retries_so_far=2, seconds_since_first_attempt=1.0,
                    not_found_window=300)
    assert action == RetryLater(4.0, 3, "instance 'i1' not found yet")


def test_event_for_a_finished_instance_is_dead_lettered_naming_the_event() -> None:
    action = decide(EVENT, InstanceNotRunning("i1", "COMPLETED"))
    assert action == DeadLetter("InstanceNotRunning",
                                "instance 'i1' is COMPLETED; the event PaymentReceived came too late")


def test_redelivered_event_that_was_raised_completes_as_duplicate() -> None:
    assert decide(EVENT, AlreadyApplied("i1")) == Complete("duplicate")


def test_event_the_instance_never_waits_for_is_dead_lettered_as_unknown() -> None:
    action = decide(EVENT, EventNotAwaited("i1", "approval_workflow", "PaymentReceived", ("ApprovalEvent",)))
    assert action == DeadLetter("UnknownEvent", "instance 'i1' is a 'approval_workflow', which does not wait for "
                                                "'PaymentReceived'; it waits for ApprovalEvent")
    action = decide(EVENT, EventNotAwaited("i1", "hello_cities", "PaymentReceived", ()))
    assert isinstance(action, DeadLetter) and action.description.endswith("it waits for no events")


# --- an event raised, but not taken within the confirmation bound: confirm copies ----------------------------


def test_raised_event_still_pending_is_re_enqueued_as_a_confirm_copy_with_growing_delay() -> None:
    """Past the bound the message is not completed on trust (chaos seed 17): a confirm copy looks again later."""
    delays = []
    for retries in range(7):
        action = decide(APPROVAL, Pending("i1"), retries_so_far=retries, seconds_since_first_attempt=1.0,
                        not_found_window=300)
        assert isinstance(action, RetryLater) and action.confirm and action.attempt == retries + 1, action
        delays.append(action.delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    action = decide(EVENT, Pending("i1"), retries_so_far=3, seconds_since_first_attempt=298, not_found_window=300)
    assert isinstance(action, RetryLater) and action.confirm and action.delay == pytest.approx(2)


def test_raised_event_still_pending_after_the_window_completes_with_a_warning_naming_the_instance() -> None:
    action = decide(APPROVAL, Pending("i1"), retries_so_far=9, seconds_since_first_attempt=301, not_found_window=300)
    assert isinstance(action, Complete) and action.note == "unconfirmed", action
    assert "'i1' is still pending after 301s" in action.warning and "worker returns" in action.warning
    assert decide(APPROVAL, Pending("i1"), not_found_window=0).note == "unconfirmed"  # type: ignore[union-attr]


@pytest.mark.parametrize("problem", [{"message_id_length": 129}, {"uncopyable": "an integer past 32 bits"}])
def test_raised_event_still_pending_that_cannot_be_copied_completes_with_a_warning(problem: dict[str, Any]) -> None:
    action = decide(EVENT, Pending("i1"), not_found_window=300, **problem)
    assert isinstance(action, Complete) and action.note == "unconfirmed"
    assert "PaymentReceived raised at instance 'i1' is still pending" in action.warning


def test_raised_event_the_instance_ended_without_is_dead_lettered_as_raised_but_never_processed() -> None:
    action = decide(APPROVAL, InstanceNotRunning("i1", "COMPLETED", raised=True))
    assert action == DeadLetter("InstanceNotRunning", "instance 'i1' is COMPLETED; the approval was raised while it "
                                                      "ran but never processed: the instance ended first")


def test_raised_event_whose_instance_was_purged_before_it_was_confirmed_is_dead_lettered() -> None:
    action = decide(EVENT, InstanceGone("i1"))
    assert isinstance(action, DeadLetter) and action.reason == "InstanceNotFound"
    assert "PaymentReceived was raised" in action.description and "purged" in action.description


def test_a_confirmation_has_a_clock_of_its_own() -> None:
    """An early event that waited 200 s for its instance and then found it pending starts a confirmation afresh;
    a confirm copy carries the mark and the confirmation's own history, read back as an early event's is."""
    early = Received(NOW - timedelta(seconds=1), RetryHistory(5, NOW - timedelta(seconds=200)).properties(6))
    assert not is_confirm_copy(early)
    fresh = RetryHistory.of(early, 300, NOW, confirm=True)
    assert fresh == RetryHistory(0, NOW, confirm=True)
    written = fresh.properties(1)
    assert written == {PROP_RETRIES: 1, PROP_FIRST_ATTEMPT: NOW.isoformat(), PROP_CONFIRM: True}
    later = NOW + timedelta(seconds=3)
    copy = Received(later - timedelta(seconds=1), written)
    assert is_confirm_copy(copy)
    assert RetryHistory.of(copy, 300, later, confirm=True) == RetryHistory(1, NOW, confirm=True)
    assert PROP_CONFIRM not in RetryHistory.of(early, 300, NOW).properties(7)


@pytest.mark.parametrize("outcome", [t for t in get_args(Outcome)], ids=lambda t: t.__name__)
def test_every_outcome_has_a_row(outcome: type) -> None:
    """The table is exhaustive: a new Outcome without a branch in decide fails here, not in production."""
    fields = {"instance_id": "i1", "status": "COMPLETED", "name": "n", "event": "e", "awaited": (), "error": "x"}
    value = outcome(**{k: v for k, v in fields.items() if k in outcome.__dataclass_fields__})
    for request in (START, APPROVAL, EVENT):
        decide(request, value)
