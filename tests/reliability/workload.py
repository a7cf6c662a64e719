"""A reproducible mixed stream: starts, duplicate starts, approvals and invalid messages, with what each must
end as. Used by the kill -9 and the restart tests."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from azure.servicebus import ServiceBusMessage

from tests.reliability.common import approval_message, start_message

ORCHESTRATION = "approval_workflow"  # its first activity records each run: a second run of an id would show
MAX_MESSAGE_BYTES = 8192  # the listener under test runs with this cap


@dataclass
class Workload:
    messages: list[ServiceBusMessage] = field(default_factory=list)
    # instance id → every input a start message for it carried (any one of them may win)
    start_inputs: dict[str, list[Any]] = field(default_factory=dict)
    # instance id → (approved, approver) of the one approval sent for it
    approvals: dict[str, tuple[bool, str]] = field(default_factory=dict)
    # message id → the reason code it must be dead-lettered with
    invalid: dict[str, str] = field(default_factory=dict)
    valid_message_ids: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.messages)


def _raw(body: bytes, subject: str | None, content_type: str | None = "application/json") -> ServiceBusMessage:
    return ServiceBusMessage(body, subject=subject, message_id=uuid.uuid4().hex, content_type=content_type)


def invalid_kinds(run: str) -> list[tuple[str, ServiceBusMessage]]:
    """One message of each invalid kind (some kinds twice), each with the reason it must be dead-lettered with."""
    nested = "[" * 150 + "]" * 150
    return [
        ("InvalidJson", _raw(b"{not json", "start")),
        ("InvalidJson", _raw(b'{"orchestration": "approval_workflow", "input": ' + nested.encode() + b"}", "start")),
        ("InvalidEncoding", _raw(b'{"orchestration": "approval_workflow", "input": "\xff\xfe"}', "start")),
        ("SchemaViolation", _raw(json.dumps({"instance_id": f"{run}-x", "approved": "yes",
                                             "approver": "mallory"}).encode(), "approval")),
        ("SchemaViolation", _raw(json.dumps({"orchestration": ORCHESTRATION, "extra": 1}).encode(), "start")),
        ("UnknownSubject", _raw(json.dumps({"orchestration": ORCHESTRATION}).encode(), "begin")),
        ("UnknownSubject", _raw(json.dumps({"orchestration": ORCHESTRATION}).encode(), None)),
        ("UnknownOrchestration", _raw(json.dumps({"orchestration": "send_approval_request"}).encode(), "start")),
        ("TooLarge", _raw(json.dumps({"orchestration": ORCHESTRATION,
                                      "input": "x" * (MAX_MESSAGE_BYTES + 1)}).encode(), "start")),
        ("UnsupportedContentType", _raw(json.dumps({"orchestration": ORCHESTRATION}).encode(), "start",
                                        "text/xml")),
    ]


def mixed(run: str, *, starts: int, duplicates: int, approvals: int, invalid: int, seed: int = 7) -> Workload:
    """`starts` distinct instances (half named by the body, half by the message id), `duplicates` extra starts
    of some of them (a publisher retry: same message id and body; or a second start of the same instance id with
    another input), `approvals` approvals (one per instance, each published after its start) and `invalid`
    messages of every kind. Ordered randomly but reproducibly."""
    rng = random.Random(seed)
    w = Workload()
    keyed: list[tuple[float, ServiceBusMessage]] = []
    position: dict[str, float] = {}
    originals: list[tuple[str, bool, Any]] = []
    for i in range(starts):
        iid = f"{run}-s{i:04d}"
        data = {"item": i, "timeout_seconds": 900}
        by_body = i % 2 == 0
        message = start_message(ORCHESTRATION, input=data, instance_id=iid if by_body else None,
                                message_id=None if by_body else iid)
        w.start_inputs[iid] = [data]
        originals.append((iid, by_body, data))
        keyed.append((float(len(keyed)), message))
        position[iid] = float(len(keyed))
        w.valid_message_ids.add(str(message.message_id))
    for k in range(duplicates):
        iid, by_body, data = rng.choice(originals)
        if by_body:
            other = {"item": data["item"], "duplicate": k, "timeout_seconds": 900}
            message = start_message(ORCHESTRATION, input=other, instance_id=iid)
            w.start_inputs[iid].append(other)
        else:
            message = start_message(ORCHESTRATION, input=data, message_id=iid)
        keyed.append((rng.uniform(0, len(originals)), message))
        w.valid_message_ids.add(str(message.message_id))
    kinds = invalid_kinds(run)
    for k in range(invalid):
        reason, template = kinds[k % len(kinds)]
        message = ServiceBusMessage(b"".join(bytes(s) for s in template.body), subject=template.subject,
                                    message_id=f"{run}-bad{k:04d}", content_type=template.content_type)
        w.invalid[str(message.message_id)] = reason
        keyed.append((rng.uniform(0, len(originals)), message))
    for k, (iid, _by_body, _data) in enumerate(rng.sample(originals, approvals)):
        approved = rng.random() < 0.5
        approver = f"{run}-approver{k}"
        message = approval_message(iid, approved, approver)
        w.approvals[iid] = (approved, approver)
        w.valid_message_ids.add(str(message.message_id))
        keyed.append((position[iid] + rng.uniform(0.5, 60), message))
    keyed.sort(key=lambda pair: pair[0])
    w.messages = [m for _key, m in keyed]
    return w
