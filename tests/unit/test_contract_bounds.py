"""The message contract's bounds (issue 23): one test per bound and its dead-letter reason, the limit inclusive,
each description naming the limit and the actual size, and the publisher-side builders refusing the same."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from localdts import limits as localdts_limits
from orchestrations import registry
from orchestrations.events import CATALOG
from orchestrations.workflow_with_retry import RETRY_BOUNDS
from sbworker.core import limits
from sbworker.core.codes import Reason
from sbworker.core.contract import (
    SUBJECT_APPROVAL,
    SUBJECT_EVENT,
    SUBJECT_START,
    ApprovalRequest,
    EventRequest,
    Invalid,
    StartRequest,
    approval_body,
    check_event_data,
    event_body,
    parse,
    start_body,
)
from sbworker.core.limits import MAX_INSTANCE_ID_LENGTH, Limits

# The issue's message: ~160 KB on the wire, 480 KB once the SDK has JSON-escaped every "é".
ISSUE_INPUT: dict[str, Any] = {"pad": "\u00e9" * 80_000, "always_fail": True,
                               "retry": {"max_attempts": 100, "first_retry_seconds": 0}}


def run(body: Any, subject: str = SUBJECT_START, *, message_id: str | None = "msg-1",
        bounds: Limits = limits.DEFAULT_LIMITS) -> StartRequest | ApprovalRequest | Invalid:
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    return parse(raw, subject=subject, content_type="application/json", message_id=message_id,
                 is_registered=registry.is_startable, registered_names=registry.orchestration_names,
                 events=CATALOG, bounds=bounds, input_problem=registry.input_problem)


def reason_of(result: object, reason: Reason) -> str:
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result
    return result.description


# --- instance id: DTS's 100 characters --------------------------------------------------------------------


def test_the_instance_id_limit_is_dts_s_and_localdts_enforces_the_same() -> None:
    assert MAX_INSTANCE_ID_LENGTH == localdts_limits.MAX_INSTANCE_ID_LENGTH == 100


@pytest.mark.parametrize("subject", [SUBJECT_START, SUBJECT_APPROVAL, SUBJECT_EVENT])
def test_an_instance_id_over_100_characters_is_instance_id_too_long(subject: str) -> None:
    body: dict[str, Any] = {
        SUBJECT_START: {"orchestration": "hello_cities"},
        SUBJECT_APPROVAL: {"approved": True, "approver": "a"},
        SUBJECT_EVENT: {"name": "PaymentReceived", "data": {"amount_cents": 1, "currency": "EUR", "reference": "r"}},
    }[subject]
    assert not isinstance(run({**body, "instance_id": "i" * 100}, subject), Invalid)
    description = reason_of(run({**body, "instance_id": "i" * 101}, subject), Reason.INSTANCE_ID_TOO_LONG)
    assert description == ("$.instance_id is 101 characters; the limit is 100 characters "
                           "(the Durable Task Scheduler's)")


def test_a_defaulted_instance_id_obeys_the_same_limit() -> None:
    assert isinstance(run({"orchestration": "hello_cities"}, message_id="m" * 100), StartRequest)
    description = reason_of(run({"orchestration": "hello_cities"}, message_id="m" * 101), Reason.INSTANCE_ID_TOO_LONG)
    assert "defaults to the message_id" in description and "101 characters" in description
    assert "limit is 100" in description


# --- instance id: "@" starts an entity's id, which the Durable Task SDKs reserve -------------------------------


@pytest.mark.parametrize("subject", [SUBJECT_START, SUBJECT_APPROVAL, SUBJECT_EVENT])
def test_an_instance_id_starting_with_at_is_reserved_instance_id(subject: str) -> None:
    body: dict[str, Any] = {
        SUBJECT_START: {"orchestration": "hello_cities"},
        SUBJECT_APPROVAL: {"approved": True, "approver": "a"},
        SUBJECT_EVENT: {"name": "PaymentReceived", "data": {"amount_cents": 1, "currency": "EUR", "reference": "r"}},
    }[subject]
    assert not isinstance(run({**body, "instance_id": "order@42"}, subject), Invalid)  # "@" elsewhere is fine
    description = reason_of(run({**body, "instance_id": "@counter@42"}, subject), Reason.RESERVED_INSTANCE_ID)
    assert description == ("$.instance_id starts with '@', which the Durable Task SDKs reserve for entity ids "
                           "('@name@key'): an orchestration's instance id must not start with '@'")


def test_a_defaulted_or_cloudevents_instance_id_obeys_the_same_rule() -> None:
    description = reason_of(run({"orchestration": "hello_cities"}, message_id="@counter@42"),
                            Reason.RESERVED_INSTANCE_ID)
    assert description.startswith("$.instance_id is absent, so it defaults to the message_id, but the message_id "
                                  "starts with '@'")
    event = {"specversion": "1.0", "id": "@counter@42", "source": "/s", "type": "sbworker.start",
             "data": {"orchestration": "hello_cities"}}
    cloud = parse(json.dumps(event).encode(), subject=None, content_type="application/cloudevents+json",
                  message_id="m-1", is_registered=registry.is_startable)
    assert "the CloudEvents id starts with '@'" in reason_of(cloud, Reason.RESERVED_INSTANCE_ID)


def test_the_reserved_prefix_comes_before_the_schema_and_the_builders_refuse_it() -> None:
    reason_of(run({"orchestration": "hello_cities", "instance_id": "@x@y", "bogus": 1}),
              Reason.RESERVED_INSTANCE_ID)
    for build in (lambda: start_body("hello_cities", instance_id="@x@y"),
                  lambda: approval_body("@x@y", True, "a"),
                  lambda: event_body("@x@y", "PaymentReceived",
                                     {"amount_cents": 1, "currency": "EUR", "reference": "r"}, CATALOG)):
        with pytest.raises(ValueError, match="reserve for entity ids") as raised:
            build()
        assert getattr(raised.value, "reason", None) == Reason.RESERVED_INSTANCE_ID


def test_localdts_refuses_the_same_ids() -> None:
    assert localdts_limits.instance_id_problem("@counter@42") is not None
    assert localdts_limits.instance_id_problem("order@42") is None


def test_the_schemas_publish_the_same_limit() -> None:
    for name in ("start", "approval", "event"):
        text = (resources.files("sbworker.core") / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
        assert json.loads(text)["$defs"]["instanceId"]["maxLength"] == MAX_INSTANCE_ID_LENGTH


# --- input size, measured as DTS holds it ------------------------------------------------------------------


def test_the_input_bound_counts_the_json_dts_stores_not_the_body() -> None:
    # 200 KB on the wire (under MAX_MESSAGE_BYTES), 600 KB once escaped: over the default 512 KiB.
    body = {"orchestration": "hello_cities", "input": "\u00e9" * 100_000}
    assert len(json.dumps(body, ensure_ascii=False).encode()) < 262_144
    description = reason_of(run(body), Reason.INPUT_TOO_LARGE)
    assert description == ("$.input is 600,002 bytes as JSON in DTS; the limit is 524,288 bytes "
                           "(MAX_INPUT_BYTES)")


def test_the_input_limit_is_inclusive() -> None:
    value = "x" * 1000
    size = limits.serialized_size(value)
    assert isinstance(run({"orchestration": "hello_cities", "input": value}, bounds=Limits(max_input_bytes=size)),
                      StartRequest)
    description = reason_of(run({"orchestration": "hello_cities", "input": value},
                                bounds=Limits(max_input_bytes=size - 1)), Reason.INPUT_TOO_LARGE)
    assert f"{size:,} bytes" in description and f"limit is {size - 1:,} bytes" in description


# --- an orchestration's own bounds: workflow_with_retry's retry overrides ----------------------------------


def test_the_issue_s_retry_message_is_refused_at_the_contract() -> None:
    description = reason_of(run({"orchestration": "workflow_with_retry", "input": ISSUE_INPUT}),
                            Reason.INPUT_OUT_OF_BOUNDS)
    assert description == (
        "$.input.retry.max_attempts: 100 is out of bounds; the limit is 1 to 10 attempts; "
        "$.input.retry.first_retry_seconds: 0 is out of bounds; the limit is 1 to 3600 seconds "
        "(workflow_with_retry)")


def test_the_same_input_within_the_retry_bounds_is_accepted() -> None:
    within = {**ISSUE_INPUT, "retry": {"max_attempts": 10, "first_retry_seconds": 1, "backoff": 1}}
    assert isinstance(run({"orchestration": "workflow_with_retry", "input": within}), StartRequest)


@pytest.mark.parametrize("name", sorted(RETRY_BOUNDS))
def test_each_retry_override_is_bounded_on_both_sides(name: str) -> None:
    _default, low, high, _unit = RETRY_BOUNDS[name]
    for inside in (low, high):
        assert isinstance(run({"orchestration": "workflow_with_retry", "input": {"retry": {name: inside}}}),
                          StartRequest)
    for outside in (low - 0.5, high + 1):
        description = reason_of(run({"orchestration": "workflow_with_retry", "input": {"retry": {name: outside}}}),
                                Reason.INPUT_OUT_OF_BOUNDS)
        assert f"$.input.retry.{name}: {outside:g} is out of bounds; the limit is {low:g} to {high:g}" in description


@pytest.mark.parametrize(("input", "expected"), [
    ({"retry": "fast"}, "$.input.retry: expected an object"),
    ({"retry": {"max_attempts": "3"}}, "$.input.retry.max_attempts: expected a number, got str"),
    ({"retry": {"max_attempts": True}}, "$.input.retry.max_attempts: expected a number, got bool"),
    ({"key": "k" * 257}, "$.input.key: expected a string of at most 256 characters, got 257 characters"),
    ({"key": 5}, "$.input.key: expected a string of at most 256 characters, got int"),
])
def test_malformed_retry_fields_are_named(input: dict[str, Any], expected: str) -> None:
    description = reason_of(run({"orchestration": "workflow_with_retry", "input": input}), Reason.INPUT_OUT_OF_BOUNDS)
    assert description == f"{expected} (workflow_with_retry)"


def test_other_orchestrations_take_any_input_within_the_size_bound() -> None:
    assert isinstance(run({"orchestration": "approval_workflow", "input": {"retry": {"max_attempts": 100}}}),
                      StartRequest)


# --- event data ----------------------------------------------------------------------------------------------


def test_an_approval_s_event_data_over_max_event_bytes_is_event_too_large() -> None:
    body = {"instance_id": "x", "approved": True, "approver": "a", "comment": "c" * 2000}
    assert isinstance(run(body, SUBJECT_APPROVAL), ApprovalRequest)  # at the default, the schema bounds it
    description = reason_of(run(body, SUBJECT_APPROVAL, bounds=Limits(max_event_bytes=1024)), Reason.EVENT_TOO_LARGE)
    assert "the data of event ApprovalEvent is 2,07" in description
    assert "the limit is 1,024 bytes (MAX_EVENT_BYTES)" in description


def test_a_declared_event_s_data_over_max_event_bytes_is_event_too_large() -> None:
    data = {"amount_cents": 4500, "currency": "EUR", "reference": "r" * 128, "payer": "\u00e9" * 256}
    body = {"instance_id": "invoice-1", "name": "PaymentReceived", "data": data}
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")

    def parse_event(bounds: Limits) -> object:
        return parse(raw, subject=SUBJECT_EVENT, content_type="application/json", message_id="m-1",
                     is_registered=registry.is_startable, events=CATALOG, bounds=bounds)

    assert isinstance(parse_event(limits.DEFAULT_LIMITS), EventRequest)
    description = reason_of(parse_event(Limits(max_event_bytes=1024)), Reason.EVENT_TOO_LARGE)
    assert description.startswith("the data of event PaymentReceived is 1,")
    assert description.endswith("the limit is 1,024 bytes (MAX_EVENT_BYTES)")
    with pytest.raises(ValueError, match="MAX_EVENT_BYTES"):
        event_body("invoice-1", "PaymentReceived", data, CATALOG, bounds=Limits(max_event_bytes=1024))
    with pytest.raises(ValueError, match="limit is 100 characters"):
        event_body("i" * 101, "PaymentReceived", data, CATALOG)


def test_the_largest_approval_the_schema_allows_fits_the_default_event_bound() -> None:
    body = {"instance_id": "i" * 100, "approved": True, "approver": "\u00e9" * 256, "comment": "\u00e9" * 4096}
    assert isinstance(run(body, SUBJECT_APPROVAL, message_id="m" * 128), ApprovalRequest)


# --- order: the most basic reason first ---------------------------------------------------------------------


def test_bounds_come_after_the_schema_and_registration() -> None:
    reason_of(run({"orchestration": "nope", "input": "\u00e9" * 100_000}), Reason.UNKNOWN_ORCHESTRATION)
    reason_of(run({"orchestration": "workflow_with_retry", "bogus": 1, "input": ISSUE_INPUT}),
              Reason.SCHEMA_VIOLATION)
    too_big = {**ISSUE_INPUT, "pad": "\u00e9" * 100_000}
    reason_of(run({"orchestration": "workflow_with_retry", "input": too_big}), Reason.INPUT_TOO_LARGE)


def test_the_instance_id_length_comes_before_the_schema() -> None:
    reason_of(run({"orchestration": "hello_cities", "instance_id": "i" * 200, "bogus": 1}),
              Reason.INSTANCE_ID_TOO_LONG)


# --- the builders (sbworker publish, the dashboard) refuse the same ------------------------------------------


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"instance_id": "i" * 101}, "limit is 100 characters"),
    ({"input": "\u00e9" * 100_000}, "the limit is 524,288 bytes (MAX_INPUT_BYTES)"),
])
def test_start_body_refuses_what_the_listener_would_dead_letter(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=r".") as raised:
        start_body("hello_cities", **kwargs)
    assert fragment in str(raised.value)


def test_start_body_applies_the_orchestration_s_own_bounds() -> None:
    with pytest.raises(ValueError, match="max_attempts: 100 is out of bounds"):
        start_body("workflow_with_retry", ISSUE_INPUT, input_problem=registry.input_problem)


def test_approval_body_and_event_data_refuse_past_max_event_bytes() -> None:
    with pytest.raises(ValueError, match="MAX_EVENT_BYTES"):
        approval_body("x", True, "a", "c" * 2000, bounds=Limits(max_event_bytes=1024))
    check_event_data({"k": "v" * 60_000})
    with pytest.raises(ValueError, match=r"event data is 262,1\d\d bytes as JSON in DTS; the limit is 65,536"):
        check_event_data({"k": "v" * 262_144})
