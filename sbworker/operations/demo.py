"""What `make run` shows first: each of the four workflows, started through the queue, with its result.

It goes the real way (a start message → the listener → DTS → the worker; an approval message for the approval
workflow), so a newcomer sees the whole path work before publishing anything themselves.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

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
}


def run_demo(settings: Settings, emit: Callable[[str], None], *, timeout: float = 60.0) -> bool:
    """Start the four workflows via the queue, approve the approval one, print each result. True if all finished."""
    run = uuid.uuid4().hex[:6]
    ids = {name: f"demo-{name}-{run}" for name in DEMO_INPUTS}
    with clients.servicebus_sync_client(settings.servicebus) as sb:
        for name, value in DEMO_INPUTS.items():
            message, _ = publish.start_message(name, value, ids[name])
            publish.send(sb, settings.servicebus.source, message)
        approved = False
        pending = dict(ids)
        deadline = time.monotonic() + timeout
        with clients.dts_client(settings.dts) as dts:
            while pending and time.monotonic() < deadline:
                for name, iid in list(pending.items()):
                    state = dts.get_orchestration_state(iid)
                    if state is None:
                        continue
                    if name == "approval_workflow" and not approved and \
                            "awaiting_approval" in (state.serialized_custom_status or ""):
                        publish.send(sb, settings.servicebus.source,
                                     publish.approval_message(iid, True, "make-run-demo", "approved by the demo"))
                        approved = True
                    if state.runtime_status in TERMINAL_STATUSES:
                        result = json.loads(state.serialized_output) if state.serialized_output else None
                        emit(f"  {name:<20} {state.runtime_status.name:<9} {json.dumps(result)}")
                        del pending[name]
                time.sleep(0.1)
    for name in pending:
        emit(f"  {name:<20} did not finish within {timeout:.0f}s (see the log above)")
    return not pending
