"""A seed → the campaign's workload: every message to publish, when, and what it must end as.

The workload is a stream of small stories, each the messages of one instance (or of one bad message): a start
with its approval, and sometimes the same start published again, a second start of the same instance with another
input, the approval published again, a competing decision right behind it, a late decision once the instance has
finished; an approval published before its start; a workflow left to time out; the other workflows; approvals for
instances nobody starts or that never wait for one; invalid messages of every kind. Deterministic from the seed
(message ids included), like the fault schedule.

Declared events (subject `event`): invoices paid in parts by `PaymentReceived` events, some before the invoice
exists, some published twice, one in another currency, one after the invoice was paid, and a payment sent to a
workflow that does not wait for one.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from typing import Any

from azure.servicebus import ServiceBusMessage

from tests.reliability.common import approval_message, event_message, start_message
from tests.reliability.workload import invalid_kinds

APPROVAL_WORKFLOW = "approval_workflow"
INVOICE_WORKFLOW = "invoice_payment"
PAYMENT = "PaymentReceived"
LONG_WAIT = 3600  # an instance with an approval coming never times out during a campaign
STORIES_PER_SECOND = 3.0
HELLO = "Hello Tokyo!, Hello Seattle!, Hello London!"
CITIES = ("Tokyo", "Seattle", "London", "Paris", "Berlin", "Lagos", "Lima", "Oslo")


@dataclass(frozen=True)
class Send:
    """One message to publish. `role` says why it exists; `expect` what the checker needs to judge it."""

    at: float  # seconds after the campaign starts
    message_id: str
    subject: str | None
    body: bytes
    content_type: str | None
    role: str
    instance_id: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    after_finished: bool = False  # publish only once `instance_id` is seen finished (a late decision)

    def message(self) -> ServiceBusMessage:
        return ServiceBusMessage(self.body, subject=self.subject, message_id=self.message_id,
                                 content_type=self.content_type)

    def record(self) -> dict[str, Any]:
        """The history's view of it: the body as text when it is UTF-8, else base64 (prefixed `b64:`)."""
        try:
            body = self.body.decode("utf-8")
        except UnicodeDecodeError:
            body = "b64:" + base64.b64encode(self.body).decode()
        return {"mid": self.message_id, "subject": self.subject, "ct": self.content_type, "body": body,
                "role": self.role, "iid": self.instance_id, "expect": self.expect, "at": round(self.at, 3)}


def _from(message: ServiceBusMessage, at: float, role: str, instance_id: str | None, expect: dict[str, Any],
          *, after_finished: bool = False) -> Send:
    body = b"".join(bytes(section) for section in message.body)
    return Send(at, str(message.message_id), message.subject, body, message.content_type, role, instance_id,
                expect, after_finished)


class _Story:
    """Numbering shared by every story of one plan, so ids are unique and repeatable."""

    def __init__(self, seed: int) -> None:
        self.prefix = f"c{seed}-"
        self.n = 0

    def next_id(self, kind: str) -> str:
        self.n += 1
        return f"{self.prefix}{kind}{self.n:05d}"


def make_plan(seed: int, duration: float) -> list[Send]:
    rng = random.Random(f"plan-{seed}")
    ids = _Story(seed)
    sends: list[Send] = []
    t = 0.5
    end = max(1.0, duration - 2.0)
    stories = [(_approval_story, 30), (_early_approval_story, 9), (_timeout_story, 8), (_other_workflow_story, 19),
               (_invoice_story, 12), (_unknown_approval_story, 4), (_invalid_story, 18)]
    while True:
        t += rng.expovariate(STORIES_PER_SECOND)
        if t >= end:
            break
        story = rng.choices([s for s, _ in stories], weights=[w for _, w in stories])[0]
        sends.extend(story(rng, ids, round(t, 3)))
    sends.sort(key=lambda s: s.at)
    return sends


def _start(ids: _Story, rng: random.Random, at: float, orchestration: str, data: Any, output: Any = None,
           ) -> tuple[str, Send]:
    """A start named by its body (instance_id) or by its message id, half and half."""
    mid = ids.next_id("m")
    by_body = rng.random() < 0.5
    iid = ids.next_id("i") if by_body else mid
    message = start_message(orchestration, input=data, instance_id=iid if by_body else None, message_id=mid)
    expect = {"orchestration": orchestration, "input": data, "output": output, "named_by_body": by_body}
    return iid, _from(message, at, "start", iid, expect)


def _republish(send: Send, at: float) -> Send:
    """The same message again (same id and body): a producer retry."""
    return Send(at, send.message_id, send.subject, send.body, send.content_type, f"{send.role}-republish",
                send.instance_id, send.expect, send.after_finished)


def _approval(ids: _Story, iid: str, at: float, approved: bool, role: str, *, after_finished: bool = False) -> Send:
    mid = ids.next_id("a")
    approver = f"approver-{mid}"  # unique: the decision recorded on the instance names the approval that won
    message = approval_message(iid, approved, approver, message_id=mid)
    return _from(message, at, role, iid, {"approved": approved, "approver": approver}, after_finished=after_finished)


def _approval_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    item = ids.n
    iid, start = _start(ids, rng, at, APPROVAL_WORKFLOW, {"item": item, "timeout_seconds": LONG_WAIT})
    approved = rng.random() < 0.5
    approval = _approval(ids, iid, at + rng.uniform(0.2, 8.0), approved, "approval")
    out = [start, approval]
    if rng.random() < 0.2:
        out.append(_republish(start, at + rng.uniform(0.0, 15.0)))
    if start.expect["named_by_body"] and rng.random() < 0.15:
        data = {"item": item, "again": True, "timeout_seconds": LONG_WAIT}
        again = start_message(APPROVAL_WORKFLOW, input=data, instance_id=iid, message_id=ids.next_id("m"))
        out.append(_from(again, at + rng.uniform(0.0, 10.0), "start-again", iid,
                         {"orchestration": APPROVAL_WORKFLOW, "input": data, "output": None}))
    if rng.random() < 0.2:
        out.append(_republish(approval, approval.at + rng.uniform(0.0, 20.0)))
    if rng.random() < 0.1:
        out.append(_approval(ids, iid, approval.at + rng.uniform(0.0, 0.5), not approved, "approval-competing"))
    if rng.random() < 0.15:
        out.append(_approval(ids, iid, approval.at + rng.uniform(1.0, 10.0), not approved, "approval-late",
                             after_finished=True))
    if rng.random() < 0.05:  # an event this workflow does not wait for: UnknownEvent
        out.append(_payment(ids, iid, at + rng.uniform(1.0, 10.0), 100, "event-misdirected"))
    return out


def _payment(ids: _Story, iid: str, at: float, cents: int, role: str, *, currency: str = "EUR",
             after_finished: bool = False) -> Send:
    mid = ids.next_id("p")
    data = {"amount_cents": cents, "currency": currency, "reference": f"ref-{mid}"}
    expect = {"name": PAYMENT, "cents": cents, "currency": currency, "reference": data["reference"]}
    return _from(event_message(iid, PAYMENT, data, message_id=mid), at, role, iid, expect,
                 after_finished=after_finished)


def _invoice_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    """An invoice paid in 2-3 parts that add up to its amount: the workflow must count each payment once."""
    parts = [rng.randint(1, 50) * 100 for _ in range(rng.randint(2, 3))]
    invoice = {"invoice": ids.next_id("inv"), "amount_cents": sum(parts), "currency": "EUR", "due_seconds": LONG_WAIT}
    delay = rng.uniform(1.0, 5.0) if rng.random() < 0.25 else 0.0  # then the first payments come before it
    iid, start = _start(ids, rng, at + delay, INVOICE_WORKFLOW, invoice)
    out = [start]
    for cents in parts:
        payment = _payment(ids, iid, at + rng.uniform(0.2, 8.0), cents, "event")
        out.append(payment)
        if rng.random() < 0.15:
            out.append(_republish(payment, payment.at + rng.uniform(0.0, 15.0)))
    if rng.random() < 0.15:  # noted by the workflow, not counted
        out.append(_payment(ids, iid, at + rng.uniform(0.2, 8.0), 100, "event-foreign", currency="USD"))
    if rng.random() < 0.15:  # the invoice is paid already: InstanceNotRunning
        out.append(_payment(ids, iid, at + 9.0, 100, "event-late", after_finished=True))
    return out


def _early_approval_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    """The approval first; its start 0.5-5 s later (the listener must hold the approval, then apply it)."""
    iid, start = _start(ids, rng, at + rng.uniform(0.5, 5.0), APPROVAL_WORKFLOW,
                        {"item": ids.n, "timeout_seconds": LONG_WAIT})
    return [_approval(ids, iid, at, rng.random() < 0.5, "approval-early"), start]


def _timeout_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    """No approval: the workflow times out ("Timed out"); sometimes a decision comes after that."""
    iid, start = _start(ids, rng, at, APPROVAL_WORKFLOW, {"item": ids.n, "timeout_seconds": rng.randint(3, 20)},
                        output="Timed out")
    out = [start]
    if rng.random() < 0.3:
        out.append(_approval(ids, iid, at + 1.0, rng.random() < 0.5, "approval-late", after_finished=True))
    return out


def _other_workflow_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    kind = rng.choice(("hello_cities", "fan_out_fan_in", "workflow_with_retry"))
    if kind == "hello_cities":
        iid, start = _start(ids, rng, at, kind, None, output=HELLO)
    elif kind == "fan_out_fan_in":
        cities = rng.sample(CITIES, rng.randint(2, 6))
        iid, start = _start(ids, rng, at, kind, cities, output=[f"Hello {c}!" for c in cities])
    else:
        # Fails once per worker process that runs it, then succeeds: ten attempts outlast any replica churn.
        result = f"ok-{ids.n}"
        data = {"fail_times": 1, "result": result,
                "retry": {"first_retry_seconds": 1, "max_attempts": 10, "backoff": 1.5, "max_interval_seconds": 2}}
        iid, start = _start(ids, rng, at, kind, data, output=result)
    out = [start]
    if rng.random() < 0.2:
        out.append(_republish(start, at + rng.uniform(0.0, 15.0)))
    if rng.random() < 0.1:  # it never waits for an approval: NotAnApprovalWorkflow
        out.append(_approval(ids, iid, at + rng.uniform(1.0, 10.0), True, "approval-misdirected"))
    return out


def _unknown_approval_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    """For an instance nobody starts: held for the window, then InstanceNotFound."""
    return [_approval(ids, ids.next_id("nobody"), at, rng.random() < 0.5, "approval-unknown")]


def _invalid_story(rng: random.Random, ids: _Story, at: float) -> list[Send]:
    reason, template = rng.choice(invalid_kinds(ids.prefix.rstrip("-")))
    message = ServiceBusMessage(b"".join(bytes(s) for s in template.body), subject=template.subject,
                                message_id=ids.next_id("bad"), content_type=template.content_type)
    send = _from(message, at, "invalid", None, {"reason": reason})
    return [send, _republish(send, at + rng.uniform(0.0, 10.0))] if rng.random() < 0.1 else [send]


def summary(sends: list[Send]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sends:
        out[s.role] = out.get(s.role, 0) + 1
    return out


def body_of(record: dict[str, Any]) -> Any:
    """The JSON a history `send` record carried (None when it is not JSON)."""
    text = record.get("body") or ""
    if text.startswith("b64:"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
