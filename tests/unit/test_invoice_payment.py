"""invoice_payment's pure parts: reading its input and its events (the waiting itself runs in test_events.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from activities import payments
from orchestrations import invoice_payment, registry
from orchestrations.invoice_payment import DEFAULT_DUE, invoice_terms, payment_of
from sbworker.core.contract import Rejected
from sbworker.operations.publish import Messages
from tests.determinism import check_source


def test_terms_with_and_without_a_due_time() -> None:
    assert invoice_terms({"invoice": "I-1", "amount_cents": 5, "currency": "EUR"}) == ("I-1", 5, "EUR", DEFAULT_DUE)
    assert invoice_terms({"invoice": "I-1", "amount_cents": 5, "currency": "EUR", "due_seconds": 2})[3] == \
        timedelta(seconds=2)


@pytest.mark.parametrize(("invoice", "field"), [
    (None, "expected an object"),
    ({"amount_cents": 5, "currency": "EUR"}, "invoice"),
    ({"invoice": "I", "amount_cents": 0, "currency": "EUR"}, "amount_cents"),
    ({"invoice": "I", "amount_cents": True, "currency": "EUR"}, "amount_cents"),
    ({"invoice": "I", "amount_cents": 5, "currency": "eur"}, "currency"),
    ({"invoice": "I", "amount_cents": 5, "currency": "EUR", "due_seconds": 0}, "due_seconds"),
])
def test_bad_input_names_the_field(invoice: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        invoice_terms(invoice)


def test_payment_of_reads_the_idempotency_key_and_refuses_malformed_data() -> None:
    data = {"amount_cents": 7, "currency": "EUR", "reference": "r", "message_id": "m"}
    assert payment_of(data) == ("m", 7, "EUR", "r")
    assert payment_of({**data, "message_id": 3}) == (None, 7, "EUR", "r")
    for bad in (None, [], {**data, "amount_cents": "7"}, {**data, "amount_cents": 0}, {**data, "reference": None}):
        assert payment_of(bad) is None


def test_issue_receipt_records_per_instance() -> None:
    ctx = type("Ctx", (), {"orchestration_id": "inv-test-1"})()
    assert payments.issue_receipt(ctx, {"invoice": "I-9"}) == {"receipt": "R-I-9", "instance_id": "inv-test-1"}
    assert payments.RECEIPTS.sent_for("inv-test-1") == [{"invoice": "I-9"}]


def test_the_contract_refuses_unusable_terms_before_anything_starts() -> None:
    assert registry.input_problem("invoice_payment", {"invoice": "I", "amount_cents": 5, "currency": "EUR"}) is None
    assert registry.input_problem("invoice_payment", {"invoice": "I", "amount_cents": 0, "currency": "EUR"}) == (
        "$.input.amount_cents: expected a positive integer")
    assert registry.input_problem("invoice_payment", [1]).startswith("$.input: expected an object")
    with pytest.raises(Rejected) as refused:
        Messages().start("invoice_payment", {"invoice": "I", "amount_cents": 5, "currency": "euro"})
    assert refused.value.reason == "InputOutOfBounds"
    assert refused.value.description == ("$.input.currency: expected an ISO 4217 code such as EUR "
                                         "(invoice_payment)")


def test_the_determinism_lint_checks_it() -> None:
    path = Path(invoice_payment.__file__)
    assert check_source(path.read_text(encoding="utf-8"), path) == []
