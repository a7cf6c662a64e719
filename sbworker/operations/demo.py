"""What `make run` shows first: each of the five workflows, started through the queue, with its result.

It goes the real way (a start message → the listener → DTS → the worker; an approval message for the approval
workflow, a declared `PaymentReceived` event for the invoice), so a newcomer sees the whole path work before
publishing anything themselves.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from azure.servicebus import ServiceBusMessage

from orchestrations.invoice_payment import PAYMENT_EVENT
from sbworker.core import clients
from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.config import Settings
from sbworker.operations import publish

DEMO_INPUTS: dict[str, Any] = {
    "hello_cities": None,
    "fan_out_fan_in": None,
    "approval_workflow": {"item": "demo laptop", "amount": 1200},
    # One failure, then success after a 1 s retry: the durable retry policy at work without the 5 s default wait.
    "workflow_with_retry": {"fail_times": 1, "retry": {"first_retry_seconds": 1}},
    "invoice_payment": {"invoice": "DEMO-1", "amount_cents": 4500, "currency": "EUR"},
}
# What a waiting workflow is sent, once, when its custom status shows that stage: its approval, its payment.
WAITING: dict[str, tuple[str, Callable[[str], ServiceBusMessage]]] = {
    "approval_workflow": ("awaiting_approval", lambda iid: publish.approval_message(
        iid, True, "make-run-demo", "approved by the demo")),
    "invoice_payment": ("awaiting_payment", lambda iid: publish.event_message(
        iid, PAYMENT_EVENT, {"amount_cents": 4500, "currency": "EUR", "reference": "demo-payment-1"})),
}


def run_demo(settings: Settings, emit: Callable[[str], None], *, timeout: float = 60.0) -> bool:
    """Start the five workflows via the queue, send the waiting ones their event, print each result. True if all
    finished."""
    run = uuid.uuid4().hex[:6]
    ids = {name: f"demo-{name}-{run}" for name in DEMO_INPUTS}
    source = settings.servicebus.source
    with clients.servicebus_sync_client(settings.servicebus) as sb:

        def send(message: ServiceBusMessage, instance_id: str) -> None:
            """In the instance's own session when sessions are on (its event then cannot overtake its start)."""
            message.session_id = publish.session_of(instance_id, None, source.sessions)
            publish.send(sb, source, message)

        for name, value in DEMO_INPUTS.items():
            message, _ = publish.start_message(name, value, ids[name])
            send(message, ids[name])
        sent: set[str] = set()
        pending = dict(ids)
        deadline = time.monotonic() + timeout
        with clients.dts_client(settings.dts) as dts:
            while pending and time.monotonic() < deadline:
                for name, iid in list(pending.items()):
                    state = dts.get_orchestration_state(iid)
                    if state is None:
                        continue
                    stage, event = WAITING.get(name, ("", None))
                    if event is not None and name not in sent and stage in (state.serialized_custom_status or ""):
                        send(event(iid), iid)
                        sent.add(name)
                    if state.runtime_status in TERMINAL_STATUSES:
                        result = json.loads(state.serialized_output) if state.serialized_output else None
                        emit(f"  {name:<20} {state.runtime_status.name:<9} {json.dumps(result)}")
                        del pending[name]
                time.sleep(0.1)
    for name in pending:
        emit(f"  {name:<20} did not finish within {timeout:.0f}s (see the log above)")
    return not pending
