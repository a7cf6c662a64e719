"""The one list of workflows and activities.

The worker registers exactly these, and the listener starts only names found in ORCHESTRATORS: a message can
never start an activity or a helper function. Adding a workflow = one module + one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from activities.approvals import send_approval_request
from activities.greetings import say_hello
from activities.payments import issue_receipt
from activities.services import compensation_activity, unreliable_service
from orchestrations.approval_workflow import APPROVAL_EVENT, approval_workflow
from orchestrations.events import CATALOG
from orchestrations.fan_out_fan_in import fan_out_fan_in
from orchestrations.hello_cities import hello_cities
from orchestrations.invoice_payment import input_problem as invoice_input_problem
from orchestrations.invoice_payment import invoice_payment
from orchestrations.workflow_with_retry import VERSION as RETRY_VERSION
from orchestrations.workflow_with_retry import input_problem as retry_input_problem
from orchestrations.workflow_with_retry import workflow_with_retry

ORCHESTRATORS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "hello_cities": hello_cities,
    "fan_out_fan_in": fan_out_fan_in,
    "approval_workflow": approval_workflow,
    "workflow_with_retry": workflow_with_retry,
    "invoice_payment": invoice_payment,
})

#: The version a new instance is started with, for orchestrations that changed their steps. An instance keeps the
#: version it started with, and the orchestration branches on `ctx.version`, so histories written by an older
#: version still replay. No entry: started without a version.
VERSIONS: Mapping[str, str] = MappingProxyType({
    "workflow_with_retry": RETRY_VERSION,
})

#: Checks of an orchestration's own input that the message contract applies before anything reaches DTS: each
#: returns why the input is out of bounds (naming the field and the limit), or None.
INPUT_CHECKS: Mapping[str, Callable[[Any], str | None]] = MappingProxyType({
    "workflow_with_retry": retry_input_problem,
    "invoice_payment": invoice_input_problem,
})

#: Orchestrations that wait for `ApprovalEvent` (declared in orchestrations/events.py): an approval message for an
#: instance of any other one is refused.
APPROVAL_ORCHESTRATIONS: frozenset[str] = frozenset(CATALOG.orchestrations_awaiting(APPROVAL_EVENT))

ACTIVITIES: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "say_hello": say_hello,
    "send_approval_request": send_approval_request,
    "unreliable_service": unreliable_service,
    "compensation_activity": compensation_activity,
    "issue_receipt": issue_receipt,
})


class _Registrable(Protocol):
    def add_orchestrator(self, fn: Any) -> str: ...
    def add_activity(self, fn: Any) -> str: ...


def is_startable(name: str) -> bool:
    """May a message start an orchestration by this name?"""
    return name in ORCHESTRATORS


def accepts_approvals(name: str | None) -> bool:
    """Does an instance of this orchestration wait for approval messages?"""
    return name in APPROVAL_ORCHESTRATIONS


def awaits_event(name: str | None, event: str) -> bool:
    """Does an instance of this orchestration wait for `event` (see orchestrations/events.py)?"""
    return CATALOG.awaits(name, event)


def events_of(name: str | None) -> tuple[str, ...]:
    """The events an instance of this orchestration waits for."""
    return CATALOG.events_of(name)


def version_of(name: str) -> str | None:
    """The version to start a new instance of `name` with (None: no version)."""
    return VERSIONS.get(name)


def input_problem(name: str, input: Any) -> str | None:
    """Why `input` is out of the bounds `name` accepts, or None (see INPUT_CHECKS)."""
    check = INPUT_CHECKS.get(name)
    return None if check is None else check(input)


def orchestration_names() -> list[str]:
    return sorted(ORCHESTRATORS)


def register(worker: _Registrable) -> None:
    """Register every orchestrator and activity under its public name.

    The SDK registers a function under its own name, so a registry key that differs from it is a bug we refuse.
    """
    for name, orchestrator in ORCHESTRATORS.items():
        _check_registered(name, worker.add_orchestrator(orchestrator))
    for name, activity in ACTIVITIES.items():
        _check_registered(name, worker.add_activity(activity))


def _check_registered(expected: str, actual: str) -> None:
    if expected != actual:
        raise RuntimeError(f"registry key {expected!r} registers as {actual!r}: rename one of them")
