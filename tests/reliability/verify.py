"""Checking a finished run against its workload, in DTS and in the dead-letter queue."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from durabletask.client import OrchestrationQuery, OrchestrationStatus

from activities import approvals
from localbus import LocalBus
from tests.reliability.common import (
    DeadLetter,
    dead_letters,
    decision,
    peek_all,
    queue_total,
    sent_requests_for,
    states,
)
from tests.reliability.workload import Workload


def all_settled(bus: LocalBus, dts_client: Any, workload: Workload) -> bool:
    """The queue is empty and every approval's instance has decided (what a run converges to)."""
    if queue_total(bus) != 0:
        return False
    return all(decision(dts_client.get_orchestration_state(iid)) is not None for iid in workload.approvals)


def progress(bus: LocalBus, dts_client: Any, workload: Workload) -> str:
    """One line for a timeout message: where the run got stuck."""
    found = states(dts_client, workload.start_inputs)
    undecided = [iid for iid in workload.approvals if decision(found[iid]) is None]
    return (f"queue counts: {bus.counts('workflow-requests')}; instances: "
            f"{sum(s is not None for s in found.values())}/{len(found)}; undecided approvals: {len(undecided)} "
            f"(e.g. {undecided[:3]})")


# Was an open bug (test_redelivery.py::test_redelivered_approval_that_was_applied_is_not_dead_lettered, fixed in
# 34aabd2): an approval redelivered after the listener raised it but died before completing it was dead-lettered
# InstanceNotRunning although it was applied. Kept as a switch in case a regression must be tolerated for a while.
TOLERATE_APPLIED_APPROVAL_IN_DLQ = False


def problems(bus: LocalBus, dts_client: Any, workload: Workload, run: str) -> list[str]:
    """Everything that differs from: one instance per valid start, every approval applied, every invalid message
    dead-lettered once with its reason and a description, no valid message dead-lettered, nothing left."""
    out: list[str] = []
    listed = dts_client.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=f"{run}-"))
    extra = sorted({s.instance_id for s in listed} - set(workload.start_inputs))
    if extra or len(listed) != len({s.instance_id for s in listed}):
        out.append(f"unexpected instances in DTS: {extra[:5]} ({len(listed)} listed)")
    found = states(dts_client, workload.start_inputs)
    runs = sent_requests_for(workload.start_inputs)
    for iid, inputs in workload.start_inputs.items():
        state = found[iid]
        if state is None:
            out.append(f"start {iid}: no instance in DTS")
            continue
        if state.name != "approval_workflow":
            out.append(f"start {iid}: instance of {state.name!r}")
        if json.loads(state.serialized_input or "null") not in inputs:
            out.append(f"start {iid}: input {state.serialized_input} was never sent for it")
        # The outbox keeps the newest OUTBOX.capacity instances only: beyond that (the soak run) rely on DTS alone.
        if len(workload.start_inputs) <= approvals.OUTBOX.capacity // 2 and runs[iid] != 1:
            out.append(f"start {iid}: its first activity ran {runs[iid]} times (instance created more than once?)")
    for iid, (approved, approver) in workload.approvals.items():
        state = found[iid]
        decided = decision(state)
        if decided is None or state is None:
            out.append(f"approval for {iid}: not applied (status {state and state.runtime_status.name})")
            continue
        expected = "Approved" if approved else "Rejected"
        if state.runtime_status != OrchestrationStatus.COMPLETED or json.loads(state.serialized_output or
                                                                                "null") != expected:
            out.append(f"approval for {iid}: ended {state.runtime_status.name} with {state.serialized_output}, "
                       f"expected {expected}")
        if decided.get("approver") != approver:
            out.append(f"approval for {iid}: decided by {decided.get('approver')!r}, expected {approver!r}")
    dead = dead_letters(bus.connection_string)
    copies = Counter(d.message_id for d in dead)
    for d in dead:
        if d.message_id in workload.invalid:
            expected_reason = workload.invalid[d.message_id]
            if d.reason != expected_reason:
                out.append(f"invalid {d.message_id}: dead-lettered as {d.reason!r}, expected {expected_reason!r}")
            if not d.description:
                out.append(f"invalid {d.message_id}: dead-lettered without a description")
        elif TOLERATE_APPLIED_APPROVAL_IN_DLQ and _applied_approval(d, workload, found):
            continue
        elif d.message_id in workload.valid_message_ids:
            out.append(f"valid message {d.message_id} ({d.subject}) dead-lettered: {d.reason}: {d.description}")
        else:
            out.append(f"unknown message {d.message_id} in the DLQ: {d.reason}")
    for mid in workload.invalid:
        if copies[mid] != 1:
            out.append(f"invalid {mid} ({workload.invalid[mid]}): {copies[mid]} copies in the DLQ, expected 1")
    left = peek_all(bus.connection_string)
    if left or queue_total(bus):
        out.append(f"{len(left)} message(s) left in the queue: {[str(m.message_id) for m in left[:5]]}; "
                   f"counts {bus.counts('workflow-requests')}")
    return out


def _applied_approval(d: DeadLetter, workload: Workload, found: dict[str, Any]) -> bool:
    """A dead-lettered approval (InstanceNotRunning) whose very decision is the one its instance recorded."""
    if d.reason != "InstanceNotRunning" or d.subject != "approval":
        return False
    body = json.loads(d.body)
    expected = workload.approvals.get(body.get("instance_id"))
    decided = decision(found.get(body.get("instance_id")))
    return (expected is not None and decided is not None and expected == (body["approved"], body["approver"])
            and (decided.get("approved"), decided.get("approver")) == expected)
