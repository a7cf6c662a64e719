"""The external events each orchestration waits for: the one declaration the listener, the publishers and the
AsyncAPI document read.

A workflow that waits for an event of its own declares it here (its name and the JSON Schema of its data, a file
in orchestrations/schemas/), and the queue can drive it with subject `event`: no change to the listener.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from orchestrations.approval_workflow import APPROVAL_EVENT
from orchestrations.invoice_payment import PAYMENT_EVENT
from sbworker.core.events import EventCatalog, EventType

APPROVAL = EventType.from_package(APPROVAL_EVENT, "orchestrations", f"schemas/{APPROVAL_EVENT}.schema.json")
PAYMENT = EventType.from_package(PAYMENT_EVENT, "orchestrations", f"schemas/{PAYMENT_EVENT}.schema.json")

#: orchestration name -> the events its instances wait for.
WAITS_FOR: Mapping[str, tuple[EventType, ...]] = MappingProxyType({
    "approval_workflow": (APPROVAL,),
    "invoice_payment": (PAYMENT,),
})

CATALOG = EventCatalog(WAITS_FOR)
