"""Property-based tests of the message contract: parse is total, rejections are well-formed, builders round-trip."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sbworker.core.codes import Reason
from sbworker.core.contract import (
    MAX_DESCRIPTION,
    ApprovalRequest,
    Invalid,
    StartRequest,
    approval_body,
    parse,
    start_body,
)

REGISTERED = frozenset({"order_fulfilment", "expense_approval"})
REASONS = frozenset(str(reason) for reason in Reason)
CONTROL = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

# Exactly the documented instance id rules: 1-100 characters (DTS's limit), no control characters (Unicode
# category Cc is U+0000-U+001F and U+007F-U+009F), not only whitespace.
# Valid ids: no control character, not only whitespace, no leading "@" (an entity's id, ReservedInstanceId).
instance_ids = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=100).filter(
    lambda text: not text.isspace() and not text.startswith("@")
)
approvers = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=256)
comments = st.none() | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.builds(timezone, offsets)
)

subjects = st.none() | st.sampled_from(["start", "approval", " start ", "Start", ""]) | st.text(max_size=12)
content_types = (
    st.none()
    | st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"])
    | (st.text(max_size=40))
)
message_ids = st.none() | st.text(max_size=300) | st.binary(max_size=40)

FIELDS = ["orchestration", "input", "instance_id", "start_at", "approved", "approver", "comment"]
field_values = (
    json_values
    | st.sampled_from(sorted(REGISTERED))
    | st.sampled_from(["2030-01-01T00:00:00Z", "2030-01-01T00:00:00", "2030-01-01T00:00:00+05:00", "true", ""])
    | instance_ids
)
objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), field_values, max_size=6)


def parse_any(
    body: bytes, subject: str | None, content_type: str | None, message_id: str | bytes | None, **kw: Any
) -> Any:
    return parse(
        body,
        subject=subject,
        content_type=content_type,
        message_id=message_id,
        is_registered=REGISTERED.__contains__,
        registered_names=lambda: REGISTERED,
        **kw,
    )


def assert_well_formed(result: object) -> None:
    """What every caller relies on, whatever the input."""
    assert type(result) in (StartRequest, ApprovalRequest, Invalid), result
    if isinstance(result, Invalid):
        assert result.reason in REASONS
        assert isinstance(result.description, str)
        assert 0 < len(result.description) <= MAX_DESCRIPTION
    elif isinstance(result, StartRequest):
        assert result.orchestration in REGISTERED
        assert_valid_instance_id(result.instance_id)
        assert result.start_at is None or result.start_at.tzinfo is UTC
        json.dumps(result.input, allow_nan=False)  # the input can always be forwarded as JSON
    else:
        assert_valid_instance_id(result.instance_id)
        assert type(result.approved) is bool
        assert isinstance(result.approver, str)
        assert 1 <= len(result.approver) <= 256
        assert result.comment is None or (isinstance(result.comment, str) and len(result.comment) <= 4096)


def assert_valid_instance_id(value: object) -> None:
    assert isinstance(value, str)
    assert 1 <= len(value) <= 100
    assert not value.isspace()
    assert not any(ch in CONTROL for ch in value)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=600), subject=subjects, content_type=content_types, message_id=message_ids)
@example(body=b'{"orchestration": "order_fulfilment"}', subject="start", content_type=None, message_id=None)
def test_arbitrary_bytes_never_raise(
    body: bytes, subject: str | None, content_type: str | None, message_id: str | bytes | None
) -> None:
    assert_well_formed(parse_any(body, subject, content_type, message_id))


@settings(max_examples=300, deadline=None)
@given(
    document=objects | json_values,
    subject=st.sampled_from(["start", "approval"]),
    message_id=message_ids,
    ensure_ascii=st.booleans(),
)
def test_arbitrary_json_documents_never_raise(
    document: Any, subject: str, message_id: str | bytes | None, ensure_ascii: bool
) -> None:
    body = json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8")
    assert_well_formed(parse_any(body, subject, "application/json", message_id))


@settings(max_examples=100, deadline=None)
@given(prefix=st.sampled_from(["[", '{"a":', "[[", '{"":[']), depth=st.integers(101, 5000), closed=st.booleans())
def test_deep_nesting_is_always_invalid_json(prefix: str, depth: int, closed: bool) -> None:
    closing = prefix.replace("[", "]").replace('{"a":', "}").replace('{"":', "}")[::-1]
    text = '{"orchestration": "order_fulfilment", "input": ' + prefix * depth + "0"
    text += closing * depth + "}" if closed else ""
    result = parse_any(text.encode(), "start", None, "m", max_bytes=10**7)
    assert isinstance(result, Invalid)
    assert result.reason == Reason.INVALID_JSON
    if closed:  # unclosed bodies that json can still descend into are reported as syntax errors instead
        assert "nested" in result.description


@given(body=st.binary(min_size=1, max_size=2000), shortfall=st.integers(1, 2000), subject=subjects)
def test_oversized_bodies_are_always_too_large(body: bytes, shortfall: int, subject: str | None) -> None:
    max_bytes = max(0, len(body) - shortfall)
    result = parse_any(body, subject, "nonsense/type", None, max_bytes=max_bytes)
    assert result == Invalid(Reason.TOO_LARGE, f"body is {len(body)} bytes; the limit is {max_bytes} bytes")


@given(instance_id=instance_ids, control=st.sampled_from(CONTROL), position=st.integers(0, 256))
def test_a_control_character_anywhere_in_an_instance_id_is_named(instance_id: str, control: str, position: int) -> None:
    instance_id = instance_id[:99]  # one character more must stay within the length limit
    position = min(position, len(instance_id))
    tainted = instance_id[:position] + control + instance_id[position:]
    body = json.dumps({"instance_id": tainted, "approved": True, "approver": "a"}).encode()
    result = parse_any(body, "approval", None, None)
    assert isinstance(result, Invalid)
    assert result.reason == Reason.SCHEMA_VIOLATION
    assert result.description.startswith("$.instance_id: must ")


@settings(max_examples=200, deadline=None)
@given(
    orchestration=st.sampled_from(sorted(REGISTERED)),
    input=json_values,
    instance_id=st.none() | instance_ids,
    start_at=st.none() | aware_datetimes,
    message_id=instance_ids,
    ensure_ascii=st.booleans(),
)
def test_start_body_round_trips(
    orchestration: str,
    input: Any,
    instance_id: str | None,
    start_at: datetime | None,
    message_id: str,
    ensure_ascii: bool,
) -> None:
    body = start_body(orchestration, input, instance_id, start_at)
    raw = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8")
    result = parse_any(raw, "start", "application/json; charset=utf-8", message_id)
    assert isinstance(result, StartRequest), result
    assert result.orchestration == orchestration
    assert same_json(result.input, input)
    assert result.instance_id == (message_id if instance_id is None else instance_id)
    assert result.instance_id_from_message is (instance_id is None)
    if start_at is None:
        assert result.start_at is None
    else:
        assert result.start_at == start_at
        assert result.start_at is not None
        assert result.start_at.tzinfo is UTC


@settings(max_examples=200, deadline=None)
@given(
    instance_id=instance_ids, approved=st.booleans(), approver=approvers, comment=comments, ensure_ascii=st.booleans()
)
def test_approval_body_round_trips(
    instance_id: str, approved: bool, approver: str, comment: str | None, ensure_ascii: bool
) -> None:
    body = approval_body(instance_id, approved, approver, comment)
    raw = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8")
    result = parse_any(raw, "approval", None, None)
    assert result == ApprovalRequest(instance_id, approved, approver, comment)
    assert isinstance(result, ApprovalRequest)
    assert result.event_data() == {"approved": approved, "approver": approver, "comment": comment}


def same_json(left: Any, right: Any) -> bool:
    """Equality that also tells JSON types apart (True is not 1, 1.0 is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, float):
        return math.copysign(1, left) == math.copysign(1, right) and left == right
    return bool(left == right)
