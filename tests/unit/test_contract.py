"""Example-based tests of the message contract: every accepted form and every reason code."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from orchestrations.approval_workflow import APPROVAL_EVENT
from sbworker.core.codes import Reason
from sbworker.core.contract import (
    MAX_DEPTH,
    MAX_DESCRIPTION,
    SUBJECT_APPROVAL,
    SUBJECT_START,
    ApprovalRequest,
    Invalid,
    StartRequest,
    approval_body,
    parse,
    start_body,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "sbworker" / "core" / "schemas"
REGISTERED = ("order_fulfilment", "expense_approval")


def run(
    body: Any,
    subject: str | None = SUBJECT_START,
    *,
    content_type: str | None = "application/json",
    message_id: str | bytes | None = "msg-1",
    max_bytes: int = 262144,
    names: tuple[str, ...] | None = REGISTERED,
) -> StartRequest | ApprovalRequest | Invalid:
    """Parse ``body`` (bytes as given, str encoded as UTF-8, anything else JSON-encoded)."""
    if isinstance(body, str):
        raw = body.encode("utf-8")
    elif isinstance(body, bytes):
        raw = body
    else:
        raw = json.dumps(body).encode("utf-8")
    return parse(
        raw,
        subject=subject,
        content_type=content_type,
        message_id=message_id,
        is_registered=lambda name: name in REGISTERED,
        registered_names=(lambda: names) if names is not None else None,
        max_bytes=max_bytes,
    )


def invalid(result: object, reason: Reason) -> str:
    """Assert ``result`` is an Invalid with ``reason``; return its description for further checks."""
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result
    assert 0 < len(result.description) <= MAX_DESCRIPTION
    return result.description


def approval(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"instance_id": "order-43", "approved": True, "approver": "alice@example.com"}
    body.update(overrides)
    return body


# --- accepted: start ------------------------------------------------------------------------------------


def test_start_minimal_body_defaults_instance_id_to_message_id() -> None:
    result = run({"orchestration": "order_fulfilment"}, message_id="msg-77")
    assert result == StartRequest("order_fulfilment", "msg-77", None, None, instance_id_from_message=True)


def test_start_full_body() -> None:
    body = {
        "orchestration": "order_fulfilment",
        "input": {"order_id": 43, "lines": [1, 2.5, "x", None, True]},
        "instance_id": "order-43",
        "start_at": "2030-01-01T09:00:00Z",
    }
    result = run(body, message_id="msg-1")
    assert result == StartRequest(
        orchestration="order_fulfilment",
        instance_id="order-43",
        input={"order_id": 43, "lines": [1, 2.5, "x", None, True]},
        start_at=datetime(2030, 1, 1, 9, tzinfo=UTC),
        instance_id_from_message=False,
    )


def test_explicit_instance_id_needs_no_message_id() -> None:
    result = run({"orchestration": "order_fulfilment", "instance_id": "given"}, message_id=None)
    assert isinstance(result, StartRequest)
    assert (result.instance_id, result.instance_id_from_message) == ("given", False)


@pytest.mark.parametrize("value", [0, -1.5, "text", [], [1, [2]], {}, {"nested": {"deep": [None]}}, False, True])
def test_start_input_may_be_any_json_value(value: Any) -> None:
    result = run({"orchestration": "order_fulfilment", "input": value})
    assert isinstance(result, StartRequest)
    assert result.input == value
    assert type(result.input) is type(value)  # False must not turn into 0, 0 into False


def test_start_input_null_means_no_input() -> None:
    result = run({"orchestration": "order_fulfilment", "input": None})
    assert isinstance(result, StartRequest)
    assert result.input is None


def test_instance_id_with_surrounding_whitespace_is_kept_verbatim() -> None:
    result = run({"orchestration": "order_fulfilment", "instance_id": " a b "})
    assert isinstance(result, StartRequest)
    assert result.instance_id == " a b "


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        ("plain", "plain"),
        (b"from-bytes", "from-bytes"),
        ("é-ünïcode", "é-ünïcode"),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
    ],
)
def test_message_id_is_normalised_to_str(message_id: Any, expected: str) -> None:
    result = run({"orchestration": "order_fulfilment"}, message_id=message_id)
    assert isinstance(result, StartRequest)
    assert result.instance_id == expected
    assert type(result.instance_id) is str
    assert result.instance_id_from_message is True


# --- start_at ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01T09:00:00Z", datetime(2030, 1, 1, 9, tzinfo=UTC)),
        ("2030-01-01T09:00:00+00:00", datetime(2030, 1, 1, 9, tzinfo=UTC)),
        ("2030-01-01T09:00:00+02:00", datetime(2030, 1, 1, 7, tzinfo=UTC)),
        ("2030-01-01T01:30:00-05:30", datetime(2030, 1, 1, 7, tzinfo=UTC)),
        ("2030-01-01T09:00:00.123456Z", datetime(2030, 1, 1, 9, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_start_at_with_zone_is_converted_to_aware_utc(text: str, expected: datetime) -> None:
    result = run({"orchestration": "order_fulfilment", "start_at": text})
    assert isinstance(result, StartRequest)
    assert result.start_at == expected
    assert result.start_at is not None
    assert result.start_at.utcoffset() == timedelta(0)
    assert result.start_at.tzinfo is UTC


@pytest.mark.parametrize("text", ["2030-01-01T09:00:00", "2030-01-01", "2030-01-01T09:00"])
def test_start_at_without_zone_is_rejected(text: str) -> None:
    description = invalid(run({"orchestration": "order_fulfilment", "start_at": text}), Reason.SCHEMA_VIOLATION)
    assert description.startswith("$.start_at:")
    assert "time zone" in description


@pytest.mark.parametrize("text", ["tomorrow", "", "2030-13-01T00:00:00Z", "2030-01-01T25:00:00Z"])
def test_start_at_that_is_not_a_timestamp_is_rejected(text: str) -> None:
    description = invalid(run({"orchestration": "order_fulfilment", "start_at": text}), Reason.SCHEMA_VIOLATION)
    assert description.startswith("$.start_at:")
    assert "ISO-8601" in description


def test_start_at_that_overflows_in_utc_is_rejected_not_raised() -> None:
    body = {"orchestration": "order_fulfilment", "start_at": "9999-12-31T23:59:59-01:00"}
    assert "$.start_at" in invalid(run(body), Reason.SCHEMA_VIOLATION)


@pytest.mark.parametrize("value", [None, 1893456000, True])
def test_start_at_must_be_a_string(value: Any) -> None:
    description = invalid(run({"orchestration": "order_fulfilment", "start_at": value}), Reason.SCHEMA_VIOLATION)
    assert description.startswith("$.start_at: expected string")


# --- accepted: approval -----------------------------------------------------------------------------------


def test_approval_accepted() -> None:
    result = run(approval(comment="looks fine"), SUBJECT_APPROVAL)
    assert result == ApprovalRequest("order-43", True, "alice@example.com", "looks fine")
    assert isinstance(result, ApprovalRequest)
    assert result.event_data() == {"approved": True, "approver": "alice@example.com", "comment": "looks fine"}


@pytest.mark.parametrize("body", [approval(approved=False), approval(approved=False, comment=None)])
def test_rejection_decision_and_absent_or_null_comment(body: dict[str, Any]) -> None:
    result = run(body, SUBJECT_APPROVAL)
    assert isinstance(result, ApprovalRequest)
    assert result.approved is False
    assert result.comment is None
    assert result.event_data() == {"approved": False, "approver": "alice@example.com", "comment": None}


def test_approval_ignores_message_id() -> None:
    result = run(approval(), SUBJECT_APPROVAL, message_id=None)
    assert isinstance(result, ApprovalRequest)
    assert result.instance_id == "order-43"


def test_length_limits_are_inclusive() -> None:
    body = approval(instance_id="i" * 100, approver="a" * 256, comment="c" * 4096)
    result = run(body, SUBJECT_APPROVAL)
    assert isinstance(result, ApprovalRequest)
    assert (len(result.instance_id), len(result.approver), len(result.comment or "")) == (100, 256, 4096)


# --- subject ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", [" start", "start ", "\tstart\n", "  start  "])
def test_subject_surrounding_whitespace_is_stripped(subject: str) -> None:
    assert isinstance(run({"orchestration": "order_fulfilment"}, subject), StartRequest)


@pytest.mark.parametrize("subject", [None, "", "   "])
def test_missing_subject(subject: str | None) -> None:
    description = invalid(run({"orchestration": "order_fulfilment"}, subject), Reason.UNKNOWN_SUBJECT)
    assert "subject is missing" in description
    assert '"start"' in description
    assert '"approval"' in description


@pytest.mark.parametrize("subject", ["Start", "START", "Approval", "begin", "st art", "start.v2", "approvals"])
def test_unknown_subject_is_case_sensitive_and_exact(subject: str) -> None:
    description = invalid(run({"orchestration": "order_fulfilment"}, subject), Reason.UNKNOWN_SUBJECT)
    assert json.dumps(subject) in description
    assert "expected" in description


def test_unknown_subject_is_not_echoed_in_full() -> None:
    description = invalid(run({}, "x" * 100_000), Reason.UNKNOWN_SUBJECT)
    assert len(description) < 300


# --- content type -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "  ",
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json; charset=utf8",
        "application/json; version=2",
    ],
)
def test_json_content_types_are_accepted(content_type: str | None) -> None:
    assert isinstance(run({"orchestration": "order_fulfilment"}, content_type=content_type), StartRequest)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/jsonx",
        "application/vnd.api+json",
        "json",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
    ],
)
def test_other_content_types_are_rejected(content_type: str) -> None:
    description = invalid(
        run({"orchestration": "order_fulfilment"}, content_type=content_type), Reason.UNSUPPORTED_CONTENT_TYPE
    )
    assert description.startswith("content_type ")
    assert json.dumps(content_type) in description


# --- encoding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{"orchestration": "\xff"}', "0xff at offset 19"),  # invalid start byte
        (b'{"orchestration": "\xc0\xaf"}', "0xc0 at offset 19"),  # overlong encoding of "/"
        (b'{"orchestration": "\xed\xa0\x80"}', "0xed at offset 19"),  # an encoded surrogate
        (b'{"orchestration": "\xe2\x82', "0xe2 at offset 19"),  # truncated sequence
        (b"\xff\xfe{\x00}\x00", "0xff at offset 0"),  # UTF-16 with its BOM
        (b"latin-1 caf\xe9", "0xe9 at offset 11"),
        (b"\xef\xbb\xbfab\xe9", "0xe9 at offset 5"),  # offsets count the UTF-8 BOM too
    ],
)
def test_body_that_is_not_utf8(raw: bytes, where: str) -> None:
    description = invalid(run(raw), Reason.INVALID_ENCODING)
    assert description.startswith("body is not valid UTF-8: byte ")
    assert where in description


def test_utf8_byte_order_mark_is_accepted() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps({"orchestration": "order_fulfilment", "input": "café"}).encode()
    result = run(raw)
    assert isinstance(result, StartRequest)
    assert result.input == "café"


def test_non_ascii_text_round_trips() -> None:
    raw = json.dumps(approval(approver="Zoë 🚀", comment="日本語"), ensure_ascii=False).encode("utf-8")
    result = run(raw, SUBJECT_APPROVAL)
    assert isinstance(result, ApprovalRequest)
    assert (result.approver, result.comment) == ("Zoë 🚀", "日本語")


# --- InvalidJson ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"not json", b"{", b'{"orchestration": "x",}', b"{'a': 1}", b'{"a": 1} {"b": 2}'])
def test_body_that_is_not_json(raw: bytes) -> None:
    description = invalid(run(raw), Reason.INVALID_JSON)
    assert "not valid JSON" in description
    assert "line 1 column" in description


@pytest.mark.parametrize("raw", [b"", b"   \n", b"\xef\xbb\xbf"])
def test_empty_body(raw: bytes) -> None:
    assert "empty" in invalid(run(raw), Reason.INVALID_JSON)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_numbers_are_rejected_naming_the_path(literal: str) -> None:
    raw = '{"orchestration": "order_fulfilment", "input": {"values": [1, ' + literal + "]}}"
    description = invalid(run(raw), Reason.INVALID_JSON)
    assert description.startswith("$.input.values[1]:")
    assert literal in description
    assert "finite" in description


def test_duplicate_top_level_key_is_rejected_naming_it() -> None:
    raw = '{"instance_id": "a", "approved": false, "approver": "x", "approved": true}'
    description = invalid(run(raw, SUBJECT_APPROVAL), Reason.INVALID_JSON)
    assert description.startswith("$.approved: duplicate key")


def test_duplicate_nested_key_is_rejected_naming_its_path() -> None:
    raw = '{"orchestration": "order_fulfilment", "input": {"outer": [{"k": 1, "k": 2}]}}'
    assert invalid(run(raw), Reason.INVALID_JSON).startswith("$.input.outer[0].k: duplicate key")


@pytest.mark.parametrize("opening", ["[", '{"a":', '[{"a":'])
def test_pathologically_deep_nesting_is_invalid_json_not_a_crash(opening: str) -> None:
    raw = (opening * 100_000).encode()
    description = invalid(run(raw, max_bytes=len(raw)), Reason.INVALID_JSON)
    assert "nested too deeply" in description


def test_deep_but_closed_nesting_is_invalid_json_not_a_crash() -> None:
    raw = ("[" * 100_000 + "]" * 100_000).encode()
    assert "nested too deeply" in invalid(run(raw), Reason.INVALID_JSON)


def test_nesting_limit_is_exact() -> None:
    # The body object is level 0 and "input" level 1, so n nested arrays reach level n.
    def body(levels: int) -> str:
        return '{"orchestration": "order_fulfilment", "input": ' + "[" * levels + "]" * levels + "}"

    result = run(body(MAX_DEPTH))
    assert isinstance(result, StartRequest)
    description = invalid(run(body(MAX_DEPTH + 1)), Reason.INVALID_JSON)
    assert description.startswith("$")
    assert f"nested deeper than {MAX_DEPTH} levels" in description
    assert len(description) < 400


def test_integer_beyond_python_digit_limit_is_invalid_json() -> None:
    raw = '{"orchestration": "order_fulfilment", "input": ' + "9" * 5000 + "}"
    assert "not valid JSON" in invalid(run(raw), Reason.INVALID_JSON)


def test_large_but_allowed_integer_is_kept_exactly() -> None:
    number = int("9" * 300)
    result = run({"orchestration": "order_fulfilment", "input": number})
    assert isinstance(result, StartRequest)
    assert result.input == number


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ('{"orchestration": "order_fulfilment", "input": {"x": "\\ud800"}}', "$.input.x:"),
        ('{"orchestration": "order_fulfilment", "input": {"\\udfff": 1}}', '$.input["\\udfff"]:'),
        ('{"orchestration": "order_fulfilment", "instance_id": "a\\udc00b"}', "$.instance_id:"),
    ],
)
def test_unpaired_surrogate_escapes_are_rejected(raw: str, path: str) -> None:
    description = invalid(run(raw), Reason.INVALID_JSON)
    assert description.startswith(path)
    assert "surrogate" in description


def test_paired_surrogate_escapes_are_fine() -> None:
    result = run('{"orchestration": "order_fulfilment", "input": "\\ud83d\\ude80"}')
    assert isinstance(result, StartRequest)
    assert result.input == "🚀"


# --- SchemaViolation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "got"), [("[]", "array"), ('"start"', "string"), ("42", "number"), ("null", "null")])
@pytest.mark.parametrize("subject", [SUBJECT_START, SUBJECT_APPROVAL])
def test_top_level_non_object_is_a_schema_violation(raw: str, got: str, subject: str) -> None:
    description = invalid(run(raw, subject), Reason.SCHEMA_VIOLATION)
    assert description.startswith(f"$: expected object, got {got}")


def test_typo_is_named_both_as_unexpected_and_as_missing() -> None:
    body = {"instance_id": "order-43", "aproved": True, "approver": "alice"}
    description = invalid(run(body, SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)
    assert "$.aproved: unexpected property" in description
    assert "$.approved: required property is missing" in description


def test_unknown_property_on_start_lists_the_allowed_ones() -> None:
    body = {"orchestration": "order_fulfilment", "instanceId": "x"}
    description = invalid(run(body), Reason.SCHEMA_VIOLATION)
    assert description == ("$.instanceId: unexpected property; allowed: input, instance_id, orchestration, start_at")


@pytest.mark.parametrize("value", ["true", "false", 1, 0, None, [], {}])
def test_approved_must_be_a_json_boolean(value: Any) -> None:
    description = invalid(run(approval(approved=value), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)
    assert description.startswith("$.approved: expected boolean, got ")


def test_string_true_is_echoed_so_the_publisher_sees_the_quoting_problem() -> None:
    description = invalid(run(approval(approved="true"), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)
    assert description == '$.approved: expected boolean, got string "true"'


@pytest.mark.parametrize("missing", ["instance_id", "approved", "approver"])
def test_approval_required_fields(missing: str) -> None:
    body = approval()
    del body[missing]
    description = invalid(run(body, SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)
    assert description == f"$.{missing}: required property is missing"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "$.approver: must not be empty"),
        ("a" * 257, "$.approver: must be at most 256 characters, got 257"),
        (7, "$.approver: expected string, got number 7"),
        (None, "$.approver: expected string, got null"),
    ],
)
def test_approver_rules(value: Any, expected: str) -> None:
    assert invalid(run(approval(approver=value), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("c" * 4097, "$.comment: must be at most 4096 characters, got 4097"),
        (False, "$.comment: expected string or null, got boolean false"),
        (["x"], "$.comment: expected string or null, got array"),
    ],
)
def test_comment_rules(value: Any, expected: str) -> None:
    assert invalid(run(approval(comment=value), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must not be empty"),
        ("   ", "must not be only whitespace"),
        ("\t \u00a0", "must not contain control characters"),
        ("a\nb", "must not contain control characters"),
        ("a\x00", "must not contain control characters"),
        ("x\n", "must not contain control characters"),  # a trailing newline must not slip past a "$" anchor
        ("del\x7f", "must not contain control characters"),
        ("nel\x85", "must not contain control characters"),
        ("\u2003\u3000", "must not be only whitespace"),
        (None, "expected string, got null"),
        (42, "expected string, got number 42"),
    ],
)
@pytest.mark.parametrize("subject", [SUBJECT_START, SUBJECT_APPROVAL])
def test_instance_id_rules(value: Any, problem: str, subject: str) -> None:
    body = {"orchestration": "order_fulfilment", "instance_id": value} if subject == SUBJECT_START else approval()
    body["instance_id"] = value
    assert invalid(run(body, subject), Reason.SCHEMA_VIOLATION) == f"$.instance_id: {problem}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "$.orchestration: required property is missing"),
        ({"orchestration": ""}, "$.orchestration: must not be empty"),
        ({"orchestration": ["order_fulfilment"]}, "$.orchestration: expected string, got array"),
    ],
)
def test_orchestration_rules(body: dict[str, Any], expected: str) -> None:
    assert invalid(run(body), Reason.SCHEMA_VIOLATION) == expected


def test_several_problems_are_reported_in_a_stable_order() -> None:
    body = {"instance_id": "", "approved": "yes", "extra": 1}
    description = invalid(run(body, SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)
    assert description == (
        "$.approver: required property is missing; "
        "$.extra: unexpected property; allowed: approved, approver, comment, instance_id; "
        '$.approved: expected boolean, got string "yes"; '
        "$.instance_id: must not be empty"
    )


def test_many_problems_are_capped() -> None:
    body = {f"extra{i}": i for i in range(50)} | {"orchestration": "order_fulfilment"}
    description = invalid(run(body), Reason.SCHEMA_VIOLATION)
    assert description.count("unexpected property") == 5
    assert description.endswith("(and 45 more)")


def test_huge_values_and_keys_are_not_echoed() -> None:
    huge = "k" * 200_000
    assert len(invalid(run({huge: 1}, SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)) <= MAX_DESCRIPTION
    assert len(invalid(run(approval(approver=huge), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)) < 200
    assert len(invalid(run(approval(approved=huge), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)) < 200


def test_odd_property_names_are_quoted_in_the_path() -> None:
    description = invalid(run(approval(**{"a b": 1}), SUBJECT_APPROVAL), Reason.SCHEMA_VIOLATION)
    assert description.startswith('$["a b"]: unexpected property')


# --- UnknownOrchestration ---------------------------------------------------------------------------------


def test_unregistered_orchestration_lists_the_registered_names() -> None:
    description = invalid(run({"orchestration": "order_fulfillment"}), Reason.UNKNOWN_ORCHESTRATION)
    assert description == (
        '$.orchestration: "order_fulfillment" is not registered; registered: expense_approval, order_fulfilment'
    )


def test_unregistered_orchestration_without_a_name_list() -> None:
    description = invalid(run({"orchestration": "nope"}, names=None), Reason.UNKNOWN_ORCHESTRATION)
    assert description.startswith('$.orchestration: "nope" is not registered')


def test_unregistered_orchestration_with_an_empty_registry() -> None:
    description = invalid(run({"orchestration": "nope"}, names=()), Reason.UNKNOWN_ORCHESTRATION)
    assert "no orchestrations are registered" in description


def test_orchestration_names_are_exact() -> None:
    for name in ("Order_Fulfilment", " order_fulfilment", "order_fulfilment "):
        invalid(run({"orchestration": name}), Reason.UNKNOWN_ORCHESTRATION)


def test_long_registry_listing_is_truncated() -> None:
    names = tuple(f"orchestration_{i:04d}" for i in range(1000))
    description = invalid(run({"orchestration": "x" * 10_000}, names=names), Reason.UNKNOWN_ORCHESTRATION)
    assert "orchestration_0000" in description
    assert len(description) <= MAX_DESCRIPTION


def test_registration_is_checked_with_the_exact_name() -> None:
    seen: list[str] = []

    def is_registered(name: str) -> bool:
        seen.append(name)
        return True

    raw = json.dumps({"orchestration": "wf", "instance_id": "i"}).encode()
    result = parse(raw, subject="start", content_type=None, message_id=None, is_registered=is_registered)
    assert isinstance(result, StartRequest)
    assert seen == ["wf"]


# --- MissingMessageId -------------------------------------------------------------------------------------


@pytest.mark.parametrize("message_id", [None, "", b""])
def test_start_without_instance_id_or_message_id(message_id: str | bytes | None) -> None:
    description = invalid(run({"orchestration": "order_fulfilment"}, message_id=message_id), Reason.MISSING_MESSAGE_ID)
    assert description.startswith("$.instance_id is absent")
    assert "no message_id" in description


def test_message_id_that_is_not_utf8() -> None:
    description = invalid(run({"orchestration": "order_fulfilment"}, message_id=b"\xff\xfe"), Reason.MISSING_MESSAGE_ID)
    assert "not valid UTF-8" in description


@pytest.mark.parametrize(
    ("message_id", "problem"),
    [
        ("a\nb", "must not contain control characters"),
        ("  ", "must not be only whitespace"),
    ],
)
def test_message_id_that_is_not_a_usable_instance_id(message_id: str, problem: str) -> None:
    description = invalid(run({"orchestration": "order_fulfilment"}, message_id=message_id), Reason.MISSING_MESSAGE_ID)
    assert "$.instance_id is absent" in description
    assert f"message_id: {problem}" in description


# --- TooLarge ---------------------------------------------------------------------------------------------


def test_body_at_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    raw = json.dumps({"orchestration": "order_fulfilment"}).encode()
    assert isinstance(run(raw, max_bytes=len(raw)), StartRequest)
    description = invalid(run(raw, max_bytes=len(raw) - 1), Reason.TOO_LARGE)
    assert description == f"body is {len(raw)} bytes; the limit is {len(raw) - 1} bytes"


@pytest.mark.parametrize(
    "raw",
    [b"\xff" * 300_000, b"[" * 300_000, b"not json " * 40_000, json.dumps({"x": "y" * 300_000}).encode()],
)
def test_size_is_checked_before_anything_else(raw: bytes) -> None:
    def is_registered(name: str) -> bool:
        raise AssertionError("must not get this far")

    result = parse(raw, subject="nonsense", content_type="text/plain", message_id=None, is_registered=is_registered)
    description = invalid(result, Reason.TOO_LARGE)
    assert "262144" in description


def test_default_limit_is_256_kib() -> None:
    padding = 262144 - len(json.dumps({"orchestration": "order_fulfilment", "input": ""}).encode())
    raw = json.dumps({"orchestration": "order_fulfilment", "input": "p" * padding}).encode()
    assert len(raw) == 262144
    assert isinstance(run(raw), StartRequest)
    invalid(run(raw + b" "), Reason.TOO_LARGE)


# --- order of checks --------------------------------------------------------------------------------------


def test_subject_is_checked_before_content_type_and_body() -> None:
    invalid(run(b"\xff", "other", content_type="text/plain"), Reason.UNKNOWN_SUBJECT)


def test_content_type_is_checked_before_the_body() -> None:
    invalid(run(b"\xff", content_type="text/plain"), Reason.UNSUPPORTED_CONTENT_TYPE)


def test_schema_is_checked_before_registration_and_message_id() -> None:
    invalid(run({"orchestration": "nope", "bogus": 1}, message_id=None), Reason.SCHEMA_VIOLATION)
    invalid(run({"orchestration": "nope"}, message_id=None), Reason.UNKNOWN_ORCHESTRATION)


# --- reason codes and types -------------------------------------------------------------------------------


def test_reason_codes_are_the_documented_wire_strings() -> None:
    assert sorted(str(reason) for reason in Reason) == sorted(
        [
            "InvalidJson",
            "InvalidEncoding",
            "SchemaViolation",
            "UnknownSubject",
            "UnknownOrchestration",
            "TooLarge",
            "UnsupportedContentType",
            "MissingMessageId",
            "UnsupportedBody",
            "UndecodableMessage",
            "MessageIdTooLong",
            "UncopyableProperties",
            "NotAnApprovalWorkflow",
            "InstanceNotFound",
            "InstanceNotRunning",
            "UnknownEvent",
            "InstanceIdTooLong",
            "ReservedInstanceId",
            "InputTooLarge",
            "InputOutOfBounds",
            "EventTooLarge",
            "InvalidCloudEvent",
        ]
    )
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    undocumented = [str(reason) for reason in Reason if f"`{reason}`" not in readme]
    assert not undocumented, f"reason codes missing from the README: {undocumented}"
    assert Reason.TOO_LARGE == "TooLarge"
    result = run(b"{}", "nope")
    assert isinstance(result, Invalid)
    assert type(result.reason) is str
    assert result.reason == "UnknownSubject"
    assert json.dumps({"reason": Reason.INVALID_JSON}) == '{"reason": "InvalidJson"}'


def test_results_are_frozen() -> None:
    result = run({"orchestration": "order_fulfilment"})
    assert isinstance(result, StartRequest)
    with pytest.raises(AttributeError):
        result.instance_id = "other"  # type: ignore[misc]


def test_subject_constants() -> None:
    assert (SUBJECT_START, SUBJECT_APPROVAL, APPROVAL_EVENT) == ("start", "approval", "ApprovalEvent")


# --- schema files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["start.schema.json", "approval.schema.json"])
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["type"] == "object"


def test_both_schemas_define_instance_id_identically() -> None:
    start = json.loads((SCHEMA_DIR / "start.schema.json").read_text(encoding="utf-8"))
    approval_schema = json.loads((SCHEMA_DIR / "approval.schema.json").read_text(encoding="utf-8"))
    assert start["$defs"]["instanceId"] == approval_schema["$defs"]["instanceId"]


@pytest.mark.parametrize(("name", "subject"), [("start.schema.json", "start"), ("approval.schema.json", "approval")])
def test_schema_examples_are_accepted(name: str, subject: str) -> None:
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert schema["examples"]
    for example in schema["examples"]:
        assert not isinstance(run(example, subject), Invalid)


def test_parse_uses_the_shipped_schema_files() -> None:
    # The property sets in the files are exactly what parse accepts: one extra property is always rejected.
    for name, subject, base in [
        ("start.schema.json", "start", {"orchestration": "order_fulfilment"}),
        ("approval.schema.json", "approval", approval()),
    ]:
        schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
        allowed = ", ".join(sorted(schema["properties"]))
        description = invalid(run(base | {"zzz": 1}, subject), Reason.SCHEMA_VIOLATION)
        assert description == f"$.zzz: unexpected property; allowed: {allowed}"


# --- building bodies --------------------------------------------------------------------------------------


def test_start_body_omits_absent_fields() -> None:
    assert start_body("order_fulfilment") == {"orchestration": "order_fulfilment"}


def test_start_body_writes_start_at_in_utc() -> None:
    moment = datetime(2030, 1, 1, 11, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))
    body = start_body("order_fulfilment", {"a": 1}, "i-1", moment)
    assert body == {
        "orchestration": "order_fulfilment",
        "input": {"a": 1},
        "instance_id": "i-1",
        "start_at": "2030-01-01T09:00:00.000500Z",
    }
    result = run(body)
    assert result == StartRequest("order_fulfilment", "i-1", {"a": 1}, moment, False)


def test_approval_body_round_trips() -> None:
    body = approval_body("order-43", False, "bob", "no budget")
    assert body == {"instance_id": "order-43", "approved": False, "approver": "bob", "comment": "no budget"}
    assert run(body, SUBJECT_APPROVAL) == ApprovalRequest("order-43", False, "bob", "no budget")
    assert "comment" not in approval_body("order-43", True, "bob")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: start_body(""), "$.orchestration"),
        (lambda: start_body("wf", instance_id="a\n"), "$.instance_id"),
        (lambda: start_body("wf", input={"x": float("nan")}), "$.input.x"),
        (lambda: start_body("wf", input=(1, 2)), "$.input"),
        (lambda: start_body("wf", input={1: "non-string key"}), "$.input"),
        (lambda: start_body("wf", start_at=datetime(2030, 1, 1)), "start_at"),  # naive
        (lambda: approval_body("i", "true", "bob"), "$.approved"),  # type: ignore[arg-type]
        (lambda: approval_body("i", True, ""), "$.approver"),
        (lambda: approval_body("i", True, "bob", "c" * 4097), "$.comment"),
    ],
)
def test_builders_refuse_what_parse_would_reject(build: Any, field: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(field)):
        build()
