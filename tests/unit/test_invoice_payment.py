"""invoice_payment's pure parts: reading its input and its events (the waiting itself runs in test_events.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from activities import payments
from orchestrations.invoice_payment import DEFAULT_DUE, invoice_terms, payment_of


def test_terms_with_and_without_a_due_time() -> None:
    assert invoice_terms({"invoice": "I-1", "amount_cents": 5, "currency": "EUR"}) == ("I-1", 5, "EUR", DEFAULT_DUE)
    assert invoice_terms({"invoice": "I-1", "amount_cents": 5, "currency": "EUR", "due_seconds": 2})[3] == \
        timedelta(seconds=2)


@pytest.mark.parametrize(("invoice", "field"), [
    (None, "input must be an object"),
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
