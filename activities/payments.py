"""Issuing the receipt of a paid invoice: the side effect a real system would send to accounting."""

from __future__ import annotations

import logging
from typing import Any

from activities.approvals import Outbox

log = logging.getLogger(__name__)

RECEIPTS = Outbox()


def issue_receipt(ctx: Any, summary: Any) -> dict[str, Any]:
    """Record the receipt (per instance, like the approval outbox); its number names the invoice."""
    instance_id = str(getattr(ctx, "orchestration_id", None))
    RECEIPTS.record(instance_id, summary)
    invoice = summary.get("invoice") if isinstance(summary, dict) else None
    log.info("receipt issued for invoice %s (instance %s)", invoice, instance_id)
    return {"receipt": f"R-{invoice}", "instance_id": instance_id}
