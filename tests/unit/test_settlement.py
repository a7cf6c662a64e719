"""One test per row of the settlement table: the whole policy is `decide`."""

from __future__ import annotations

import pytest

from listener.dispatch import (
    AlreadyApplied,
    AlreadyExists,
    InstanceNotFound,
    InstanceNotRunning,
    NotAnApprovalWorkflow,
    Raised,
    Started,
    TransientFailure,
)
from listener.settlement import Abandon, Complete, DeadLetter, RetryLater, decide
from sbworker.core.contract import ApprovalRequest, Invalid, StartRequest

START = StartRequest(orchestration="hello_cities", instance_id="i1", input=None, start_at=None,
                     instance_id_from_message=True)
APPROVAL = ApprovalRequest(instance_id="i1", approved=True, approver="ada", comment=None)


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
    assert isinstance(action, Abandon) and "UNAVAILABLE" in action.reason


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
