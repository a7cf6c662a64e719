"""The compiled schema check gives jsonschema's verdict on every document, for every schema the contract uses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from orchestrations.events import CATALOG
from sbworker.core import contract
from sbworker.core.schema_check import Schema, compile_check

SCHEMAS: dict[str, dict[str, Any]] = {
    "start": contract._START_SCHEMA,
    "approval": contract._APPROVAL_SCHEMA,
    "event": contract._EVENT_SCHEMA,
    "instanceId": contract._START_SCHEMA["$defs"]["instanceId"],
    **{f"event:{name}": event.schema for name in CATALOG.names() if (event := CATALOG.get(name)) is not None},
}


def _property_names(schema: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(schema, dict):
        names.update(schema.get("properties", {}))
        for value in schema.values():
            names |= _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _property_names(value)
    return names


KEYS = sorted(set().union(*(_property_names(s) for s in SCHEMAS.values())) | {"other", "Orchestration", ""})
# Strings at the edges the schemas draw: empty, blank, control characters, around 256 and 4096 characters,
# ISO currency codes, the patterns' alphabets.
EDGE_STRINGS = st.sampled_from(["", " ", "\t", "a", "x\u0000y", "\u007f", "\u009f", "\u00a0", "EUR", "eur", "EU",
                                "a" * 255, "a" * 256, "a" * 257, "b" * 4096, "b" * 4097, " x ", "\n", "😀" * 256])
SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**12) | st.sampled_from([0, 1, -1, 1.0, 0.5, 2**53])
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | EDGE_STRINGS)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)
DOCUMENTS = VALUES | st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_of_the_contract_compiles(name: str) -> None:
    """A schema that stops compiling silently falls back to jsonschema: correct, but the hot path slows down."""
    assert compile_check(SCHEMAS[name]) is not None


@settings(max_examples=150, deadline=None)
@given(document=DOCUMENTS)
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_verdict_is_jsonschemas(name: str, document: Any) -> None:
    schema = SCHEMAS[name]
    check = compile_check(schema)
    assert check is not None
    assert check(document) == Draft202012Validator(schema).is_valid(document)


@pytest.mark.parametrize(("schema", "good", "bad"), [
    ({"type": "integer"}, [1, 1.0, -3], [True, 1.5, "1", None]),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 10}, [0, 9.99], [-1, 10, True, "text"]),
    ({"type": ["string", "null"], "maxLength": 2}, [None, "ab"], ["abc", 1]),
    ({"not": {"type": "string", "pattern": "[\\u0000-\\u001F]"}}, ["ok", 5], ["a\u0001"]),
    ({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, ["x", False], [0]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}},
     [{}, {"a": "x", "b": 1}], [{"a": 1}, {"b": "x"}]),
    ({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}},
     [{}, {"next": {"next": {}}}], [{"next": 1}]),
    # Draft 2020-12 applies a $ref's sibling keywords (draft 7 ignored them: why fastjsonschema, which stops at
    # draft 7, cannot stand in here; README, Performance)
    ({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2}, ["ab"], ["abc", 1]),
    (True, [1, None], []),
    ({"properties": {"a": False}}, [{}, 3], [{"a": 1}]),
])
def test_keywords(schema: Any, good: list[Any], bad: list[Any]) -> None:
    check = compile_check(schema)
    assert check is not None
    for value in good:
        assert check(value) and Draft202012Validator(schema).is_valid(value), value
    for value in bad:
        assert not check(value) and not Draft202012Validator(schema).is_valid(value), value


@pytest.mark.parametrize("schema", [
    {"enum": ["a"]},
    {"const": 1},
    {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
    {"$ref": "https://example.com/other.json"},
    {"$ref": "#/$defs/missing"},
    {"items": {"type": "string"}},
    {"allOf": [{"type": "string"}, {"uniqueItems": True}]},
    {"type": "array", "prefixItems": [{"type": "string"}]},  # 2020-12 keywords a draft 7 validator would ignore
    {"dependentRequired": {"a": ["b"]}},
])
def test_what_it_does_not_know_is_left_to_jsonschema(schema: Any) -> None:
    assert compile_check(schema) is None
    if "$ref" not in schema:  # (jsonschema itself cannot resolve those two)
        expected = [e.message for e in Draft202012Validator(schema).iter_errors("x")]
        assert [e.message for e in Schema(schema).errors("x")] == expected


def test_a_rejection_is_still_worded_by_jsonschema() -> None:
    wrapped = Schema(contract._APPROVAL_SCHEMA)
    assert list(wrapped.errors({"instance_id": "i", "approved": True, "approver": "a"})) == []
    errors = list(wrapped.errors({"instance_id": "i", "approved": "yes", "approver": "a"}))
    assert [e.validator for e in errors] == ["type"]
