"""Waiting for a second kind of event: payments against an invoice, raced against its due date.

Several partial payments may settle one invoice, so this workflow counts events, and counting is where a
duplicate would hurt: every raised event carries the message's idempotency key (`message_id`, added by the
listener), and a key already counted is skipped. The listener itself never raises one message twice when it can
see the earlier raise; this covers the short window in which it cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from durabletask import task

from activities.payments import issue_receipt
from orchestrations.approval_workflow import utc_iso

log = logging.getLogger(__name__)

PAYMENT_EVENT = "PaymentReceived"
DEFAULT_DUE = timedelta(days=14)
MAX_DUE_SECONDS = 366 * 24 * 3600


def invoice_terms(invoice: Any) -> tuple[str, int, str, timedelta]:
    """(invoice id, amount in cents, currency, time until due) from the input; ValueError naming the field."""
    if not isinstance(invoice, dict):
        raise ValueError('expected an object {"invoice", "amount_cents", "currency", "due_seconds"?}')
    number, amount, currency = invoice.get("invoice"), invoice.get("amount_cents"), invoice.get("currency")
    if not isinstance(number, str) or not number:
        raise ValueError("invoice: expected a non-empty string")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        raise ValueError("amount_cents: expected a positive integer")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        raise ValueError("currency: expected an ISO 4217 code such as EUR")
    due = invoice.get("due_seconds")
    if due is None:
        return number, amount, currency, DEFAULT_DUE
    if not isinstance(due, int | float) or isinstance(due, bool) or not 0 < due <= MAX_DUE_SECONDS:
        raise ValueError(f"due_seconds: expected a number of seconds between 0 and {MAX_DUE_SECONDS}")
    return number, amount, currency, timedelta(seconds=due)


def input_problem(invoice: Any) -> str | None:
    """The message contract's check (registry.INPUT_CHECKS): a start with unusable terms is dead-lettered as
    InputOutOfBounds, naming the field, instead of starting an instance that would fail at once."""
    try:
        invoice_terms(invoice)
    except ValueError as error:
        field, sep, problem = str(error).partition(": ")
        return f"$.input.{field}: {problem}" if sep and field.isidentifier() else f"$.input: {error}"
    return None


def payment_of(data: Any) -> tuple[str | None, int, str, str] | None:
    """(idempotency key, cents, currency, reference) of a PaymentReceived event; None if it is malformed."""
    if not isinstance(data, dict):
        return None
    cents, currency, reference = data.get("amount_cents"), data.get("currency"), data.get("reference")
    if not isinstance(cents, int) or isinstance(cents, bool) or cents < 1:
        return None
    if not isinstance(currency, str) or not isinstance(reference, str):
        return None
    key = data.get("message_id")
    return (key if isinstance(key, str) else None), cents, currency, reference


def invoice_payment(ctx: task.OrchestrationContext, invoice: Any) -> Generator[task.Task[Any], Any, dict[str, Any]]:
    """Returns {"status": "Paid" | "Overdue", "paid_cents", "payments", ...}; the custom status tracks the balance."""
    number, amount, currency, due_in = invoice_terms(invoice)
    deadline = ctx.current_utc_datetime + due_in
    paid = 0
    counted: list[str] = []  # idempotency keys already counted
    payments: list[str] = []
    ignored: list[str] = []

    def status(stage: str) -> dict[str, Any]:
        return {"stage": stage, "invoice": number, "amount_cents": amount, "paid_cents": paid,
                "currency": currency, "due_at": utc_iso(deadline), "payments": payments, "ignored": ignored[-10:]}

    ctx.set_custom_status(status("awaiting_payment"))
    if not ctx.is_replaying:
        log.info("invoice_payment %s waiting for %s until %s", ctx.instance_id, PAYMENT_EVENT, deadline)
    timer = ctx.create_timer(deadline)
    while paid < amount:
        event = ctx.wait_for_external_event(PAYMENT_EVENT)
        winner = yield task.when_any([event, timer])
        if winner is timer:
            ctx.set_custom_status(status("overdue"))
            return {"status": "Overdue", "invoice": number, "paid_cents": paid, "payments": payments}
        payment = payment_of(event.get_result())
        if payment is None:
            ignored.append("malformed event")
        else:
            key, cents, paid_currency, reference = payment
            if key is not None and key in counted:
                ignored.append(f"duplicate {reference}")
            elif paid_currency != currency:
                ignored.append(f"{reference}: {paid_currency}, not {currency}")
            else:
                if key is not None:
                    counted.append(key)
                paid += cents
                payments.append(reference)
        ctx.set_custom_status(status("awaiting_payment" if paid < amount else "paid"))
    receipt = yield ctx.call_activity(issue_receipt, input={"invoice": number, "paid_cents": paid,
                                                             "currency": currency, "payments": payments})
    if not ctx.is_replaying:
        log.info("invoice_payment %s paid (%d %s)", ctx.instance_id, paid, currency)
    number_issued = receipt.get("receipt") if isinstance(receipt, dict) else None
    return {"status": "Paid", "invoice": number, "paid_cents": paid, "payments": payments, "receipt": number_issued}
