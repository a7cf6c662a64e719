"""The `make run` demo shows every shipped workflow: each is started, and each one that waits for an event is sent
it (the run itself: tests/integration/test_dev.py)."""

from __future__ import annotations

from orchestrations import registry
from orchestrations.events import WAITS_FOR
from sbworker.core import contract
from sbworker.core.messages import body_bytes, text
from sbworker.operations import publish
from sbworker.operations.demo import DEMO_INPUTS, WAITING

SHIPPED = {"hello_cities", "fan_out_fan_in", "approval_workflow", "workflow_with_retry", "invoice_payment"}


def test_the_demo_starts_every_shipped_workflow_and_sends_every_waiting_one_its_event() -> None:
    """A workflow added later needs no demo line (adding one stays one module plus one registry line)."""
    assert SHIPPED <= set(DEMO_INPUTS) <= set(registry.ORCHESTRATORS)
    assert set(WAITING) == {name for name in DEMO_INPUTS if name in WAITS_FOR}


def test_the_demo_messages_are_ones_the_listener_accepts() -> None:
    for name, value in DEMO_INPUTS.items():
        message, _ = publish.start_message(name, value, f"demo-{name}")  # Rejected if the listener would refuse it
        assert text(message.subject) == contract.SUBJECT_START
    for name, (_, event) in WAITING.items():
        message = event(f"demo-{name}")
        assert text(message.subject) in (contract.SUBJECT_APPROVAL, contract.SUBJECT_EVENT)
        assert f"demo-{name}".encode() in body_bytes(message)  # type: ignore[arg-type]
