"""Declared events: the catalog's rules, subject `event` in the contract, and the shipped declarations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrations import events as declared
from orchestrations import registry
from sbworker.core.codes import Reason
from sbworker.core.contract import ApprovalRequest, EventRequest, Invalid, event_body, parse
from sbworker.core.events import EventCatalog, EventType

ROOT = Path(__file__).resolve().parents[2]
PAYMENT = {"amount_cents": 4500, "currency": "EUR", "reference": "psp-1"}


def event(body: Any, *, events: EventCatalog | None = declared.CATALOG, subject: str = "event") -> Any:
    return parse(json.dumps(body).encode(), subject=subject, content_type="application/json", message_id="m-1",
                 is_registered=registry.is_startable, events=events)


def reason_of(result: Any, reason: Reason) -> str:
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result
    return result.description


# --- the catalog ----------------------------------------------------------------------------------------


def schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def test_catalog_answers_per_orchestration() -> None:
    a, b = EventType("A", schema()), EventType("B", schema())
    catalog = EventCatalog({"one": (a, b), "two": (b,)})
    assert catalog.names() == ["A", "B"]
    assert catalog.awaits("one", "A") and catalog.awaits("two", "B")
    assert not catalog.awaits("two", "A") and not catalog.awaits(None, "A") and not catalog.awaits("three", "A")
    assert catalog.events_of("one") == ("A", "B") and catalog.events_of(None) == ()
    assert catalog.orchestrations_awaiting("B") == ["one", "two"]
    assert catalog.get("A") is a and catalog.get("C") is None


def test_one_name_has_one_schema() -> None:
    with pytest.raises(ValueError, match="declared twice with different schemas"):
        EventCatalog({"one": (EventType("A", schema()),), "two": (EventType("A", schema(x={"type": "string"})),)})


@pytest.mark.parametrize(("name", "bad", "match"), [
    ("A", {"type": "array"}, "must be of type object"),
    ("A", schema(message_id={"type": "string"}), "reserved"),
    ("A", {"type": "object", "minProperties": "x"}, "is not of type"),
    ("", schema(), "1-256 characters"),
    (" A", schema(), "surrounding whitespace"),
])
def test_a_bad_declaration_fails_at_import(name: str, bad: dict[str, Any], match: str) -> None:
    with pytest.raises(Exception, match=match):
        EventType(name, bad)


def test_shipped_declarations() -> None:
    assert declared.CATALOG.names() == ["ApprovalEvent", "PaymentReceived"]
    assert frozenset({"approval_workflow"}) == registry.APPROVAL_ORCHESTRATIONS
    assert registry.events_of("invoice_payment") == ("PaymentReceived",)
    assert set(declared.WAITS_FOR) <= set(registry.ORCHESTRATORS)


def test_approval_event_schema_agrees_with_the_approval_shorthand() -> None:
    """`approval` is `event` with ApprovalEvent: the same fields, with the same rules, plus the instance id."""
    shorthand = json.loads((ROOT / "sbworker/core/schemas/approval.schema.json").read_text(encoding="utf-8"))
    data = declared.APPROVAL.schema
    assert {k: v for k, v in shorthand["properties"].items() if k != "instance_id"} == data["properties"]
    assert [k for k in shorthand["required"] if k != "instance_id"] == data["required"]


@pytest.mark.parametrize("declaration", list(declared.CATALOG.names()))
def test_shipped_examples_are_accepted(declaration: str) -> None:
    declared_event = declared.CATALOG.get(declaration)
    assert declared_event is not None and declared_event.schema["examples"]
    for example in declared_event.schema["examples"]:
        assert isinstance(event({"instance_id": "i", "name": declaration, "data": example}), EventRequest)


# --- subject `event` ------------------------------------------------------------------------------------


def test_declared_event_is_accepted() -> None:
    result = event({"instance_id": "inv-1", "name": "PaymentReceived", "data": PAYMENT})
    assert result == EventRequest("inv-1", "PaymentReceived", PAYMENT)
    assert result.event_name == "PaymentReceived" and result.event_data() == PAYMENT


def test_approval_event_may_be_sent_as_an_event_too() -> None:
    result = event({"instance_id": "o", "name": "ApprovalEvent", "data": {"approved": False, "approver": "x"}})
    assert isinstance(result, EventRequest) and result.event_name == ApprovalRequest("o", False, "x", None).event_name


def test_undeclared_name_lists_the_declared_ones() -> None:
    description = reason_of(event({"instance_id": "i", "name": "Shipped", "data": {}}), Reason.UNKNOWN_EVENT)
    assert description == '$.name: "Shipped" is not a declared event; declared: ApprovalEvent, PaymentReceived'


def test_names_are_exact() -> None:
    reason_of(event({"instance_id": "i", "name": "paymentreceived", "data": PAYMENT}), Reason.UNKNOWN_EVENT)


def test_without_a_catalog_no_event_is_declared() -> None:
    description = reason_of(event({"instance_id": "i", "name": "PaymentReceived", "data": PAYMENT}, events=None),
                            Reason.UNKNOWN_EVENT)
    assert description.endswith("no events are declared")


@pytest.mark.parametrize(("data", "expected"), [
    ({**PAYMENT, "amount_cents": "45"}, '$.data.amount_cents: expected integer, got string "45"'),
    ({**PAYMENT, "amount_cents": 0}, "$.data.amount_cents: 0 is less than the minimum of 1"),
    ({"currency": "EUR", "reference": "r"}, "$.data.amount_cents: required property is missing"),
    ({**PAYMENT, "tip": 1}, "$.data.tip: unexpected property; allowed: amount_cents, currency, payer, reference"),
    ({**PAYMENT, "currency": "eur"}, "$.data.currency: must be three capital letters"),
    ([1, 2], "$.data: expected object, got array"),
    ({**PAYMENT, "message_id": "forged"}, "$.data.message_id"),
])
def test_data_that_breaks_the_declared_schema(data: Any, expected: str) -> None:
    description = reason_of(event({"instance_id": "i", "name": "PaymentReceived", "data": data}),
                            Reason.SCHEMA_VIOLATION)
    assert description.startswith(expected)


def test_reserved_key_is_refused_even_where_the_schema_allows_more() -> None:
    open_schema = EventCatalog({"w": (EventType("Open", {"type": "object"}),)})
    body = {"instance_id": "i", "name": "Open", "data": {"message_id": "forged", "x": 1}}
    assert reason_of(event(body, events=open_schema), Reason.SCHEMA_VIOLATION) == (
        "$.data.message_id: reserved; the listener sets it to the message's id")
    assert event({**body, "data": {"x": 1}}, events=open_schema) == EventRequest("i", "Open", {"x": 1})


@pytest.mark.parametrize(("body", "expected"), [
    ({"instance_id": "i", "name": "PaymentReceived"}, "$.data: required property is missing"),
    ({"name": "PaymentReceived", "data": PAYMENT}, "$.instance_id: required property is missing"),
    ({"instance_id": "i", "name": "", "data": PAYMENT}, "$.name: must not be empty"),
    ({"instance_id": "i", "name": "PaymentReceived", "data": PAYMENT, "extra": 1}, "$.extra: unexpected property"),
])
def test_the_envelope_is_checked_before_the_name(body: dict[str, Any], expected: str) -> None:
    assert reason_of(event(body), Reason.SCHEMA_VIOLATION).startswith(expected)


def test_event_body_builds_what_parse_accepts_and_refuses_the_rest() -> None:
    body = event_body("inv-1", "PaymentReceived", PAYMENT, declared.CATALOG)
    assert event(body) == EventRequest("inv-1", "PaymentReceived", PAYMENT)
    with pytest.raises(ValueError, match="not a declared event"):
        event_body("inv-1", "Nope", {}, declared.CATALOG)
    with pytest.raises(ValueError, match=r"\$\.data\.currency"):
        event_body("inv-1", "PaymentReceived", {**PAYMENT, "currency": 7}, declared.CATALOG)
    with pytest.raises(ValueError, match="finite number"):
        event_body("inv-1", "PaymentReceived", {**PAYMENT, "amount_cents": float("nan")}, declared.CATALOG)
