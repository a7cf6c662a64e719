"""Judges a campaign's recorded history: what was published against what DTS and the queues hold at the end.

Independent of the service on purpose: it reads only the history file (whose final records were read from DTS and
the broker through their own SDKs) and imports nothing from the product, so a bug in the listener cannot hide in
a shared helper. What it knows of the product is the README's contract: `approval_workflow` takes approvals and its
custom status names the decision's approver, `invoice_payment` counts PaymentReceived events into its output, the
dead-letter reasons.

The rules (each violation names one):
- every acknowledged start → exactly one instance (one ExecutionStarted), of that orchestration, with an input
  that was sent for it, COMPLETED with the expected output;
- every approval for a waiting instance applied exactly once: the instance decided by one of the approvals sent
  for it; an applied approval never dead-lettered;
- an approval not applied is dead-lettered with a reason that fits what DTS holds (InstanceNotRunning: the instance
  had finished; NotAnApprovalWorkflow: it is another workflow; InstanceNotFound: it never existed, or appeared only
  after the window) or was raised on an instance that a competing decision had already settled;
- an early approval is applied once its instance exists, or dead-lettered InstanceNotFound only if the instance
  appeared after the window;
- every declared event (an invoice's PaymentReceived) reaches its instance, and the invoice counts each payment in
  its currency exactly once and is paid in full; one sent to a workflow that does not wait for it is dead-lettered
  UnknownEvent, one sent after the invoice was paid InstanceNotRunning;
- every invalid message dead-lettered with its reason and a description, once per copy published;
- no valid message dead-lettered; no dead letter nobody sent; no instance nobody started; the queue empty;
- nothing acknowledged and lost (an acknowledged message with no effect and no dead letter);
- no process exits unless a fault asked it to.
A violation carries the message ids and instance ids it is about, so `minimal_history` can show just those.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

APPROVAL_WORKFLOWS = frozenset({"approval_workflow"})
# The external events each workflow waits for (README: Orchestrations); invoice_payment counts PaymentReceived.
DECLARED: dict[str, frozenset[str]] = {"approval_workflow": frozenset({"ApprovalEvent"}),
                                       "invoice_payment": frozenset({"PaymentReceived"})}
TERMINAL = frozenset({"COMPLETED", "FAILED", "TERMINATED"})
RAISE_KINDS = ("approval", "event")  # messages that raise an event on an instance


# Open findings that campaigns still hit: each is reported under its own rule, with its minimal history, and
# counted, but does not fail a campaign while it stays listed here. Each is documented in the README (the text
# printed with it names where); remove the entry once the finding is fixed.
KNOWN: dict[str, str] = {
    "reenqueue-doubled": "finding F2, documented in README.md, Guarantees, 'Known limitation: an early event can "
                         "wait twice': an early approval's (or event's) scheduled copy, or a confirm copy of one "
                         "raised but not yet taken, and the complete of the message it replaces are not one "
                         "transaction; the copy is withdrawn when the complete is refused for a lost lock, but after "
                         "an ambiguous failure (a dropped link, a paused broker, a receiver shut down) or a kill "
                         "between the two, the message comes back and waits twice: its effect happens once, yet it "
                         "may also end in the DLQ (twice, or once besides being applied)",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    text: str
    mids: frozenset[str] = frozenset()
    iids: frozenset[str] = frozenset()


@dataclass
class Message:
    """Everything the history says about one message id (a republished message has several copies)."""

    mid: str
    role: str
    subject: str | None
    iid: str | None
    expect: dict[str, Any]
    first_try: float
    attempts: int = 0
    acks: int = 0

    @property
    def kind(self) -> str:
        return self.role.split("-")[0]


@dataclass
class Instance:
    iid: str
    name: str | None
    status: str
    input: Any
    output: Any
    custom: Any
    created: float | None
    starts: int
    raised: list[dict[str, Any]]

    @property
    def decision(self) -> dict[str, Any] | None:
        c = self.custom
        return c if isinstance(c, dict) and c.get("stage") == "decided" else None

    def raised_count(self, mid: str) -> int:
        return sum(1 for r in self.raised if r.get("mid") == mid)


@dataclass
class Report:
    campaign: dict[str, Any]
    schedule: dict[str, Any]
    violations: list[Violation]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Violation]:
        return [v for v in self.violations if v.rule not in KNOWN]

    @property
    def known(self) -> Counter[str]:
        """Occurrences of each known open finding: counted for the figures, not failing the campaign."""
        return Counter(v.rule for v in self.violations if v.rule in KNOWN)


def _load(records: list[dict[str, Any]]) -> tuple[dict[str, Message], dict[str, Instance],
                                                   dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    messages: dict[str, Message] = {}
    instances: dict[str, Instance] = {}
    dead: dict[str, list[dict[str, Any]]] = {}
    left: list[dict[str, Any]] = []
    for r in records:
        k = r.get("k")
        if k == "send":  # every publish attempt; the first one of a message id carries what it is
            m = messages.get(r["mid"])
            if m is None:
                m = messages[r["mid"]] = Message(r["mid"], r.get("role", "?"), r.get("subject"), r.get("iid"),
                                                 r.get("expect") or {}, r["t"])
            m.attempts += 1
        elif k == "ack" and r["mid"] in messages:
            messages[r["mid"]].acks += 1
        elif k == "instance":
            instances[r["iid"]] = Instance(r["iid"], r.get("name"), r.get("status", "?"), r.get("input"),
                                           r.get("output"), r.get("custom"), r.get("created"),
                                           int(r.get("starts", 0)), list(r.get("raised") or []))
        elif k == "dead":
            dead.setdefault(str(r.get("mid")), []).append(r)
        elif k == "left":
            left.append(r)
    return messages, instances, dead, left


def check(records: list[dict[str, Any]]) -> Report:
    campaign = next((r for r in records if r.get("k") == "campaign"), {})
    schedule = next((r for r in records if r.get("k") == "schedule"), {})
    window = float(campaign.get("window", 0))
    # An approval's clock starts at its enqueue (after our first publish attempt began); the listener's lookup and
    # its decision to give up may lie up to a lock apart (a paused replica cannot settle after its lock expired).
    slack = float(campaign.get("lock", 5)) + 5.0
    messages, instances, dead, left = _load(records)
    out: list[Violation] = []
    stats: Counter[str] = Counter()
    if not any(r.get("k") == "end" for r in records):
        out.append(Violation("history-incomplete", "no end record: the campaign stopped (or is still running) "
                             "before it read the outcomes, so nothing else can be judged"))
        return Report(campaign, schedule, out, _stats(records, messages, instances, dead, stats))

    by_instance: dict[str, list[Message]] = {}
    for m in messages.values():
        if m.iid is not None:
            by_instance.setdefault(m.iid, []).append(m)

    for iid, related in sorted(by_instance.items()):
        starts = [m for m in related if m.kind == "start"]
        if starts:
            out += _judge_instance(iid, starts, related, instances.get(iid), dead, window, slack, stats)
    for m in sorted(messages.values(), key=lambda m: m.mid):
        copies = dead.get(m.mid, [])
        if len(copies) > m.attempts and m.kind not in RAISE_KINDS:  # those are judged in _judge_raise
            out.append(Violation("dead-letter-doubled", f"{m.role} {m.mid}: {len(copies)} copies in the DLQ, but "
                                 f"only {m.attempts} publish attempt(s)", frozenset({m.mid}), frozenset({m.iid or ""})))
        if m.kind == "start":
            out += [Violation("valid-dead-lettered", f"start {m.mid} (instance {m.iid}) dead-lettered "
                              f"{d.get('reason')}: {d.get('description')}", frozenset({m.mid}),
                              frozenset({m.iid or ""})) for d in copies]
        elif m.kind == "invalid":
            out += _judge_invalid(m, copies)
        elif m.kind in RAISE_KINDS:
            out += _judge_raise(m, instances.get(m.iid or ""), copies, window, slack, stats)
    for mid, copies in sorted(dead.items()):
        if mid not in messages:
            out.append(Violation("unknown-dead-letter", f"{len(copies)} dead letter(s) with id {mid} that the "
                                 f"campaign never published (reason {copies[0].get('reason')})", frozenset({mid})))
    started = {iid for iid, related in by_instance.items() if any(m.kind == "start" for m in related)}
    for iid in sorted(set(instances) - started):
        out.append(Violation("phantom-instance", f"instance {iid} exists ({instances[iid].name}, "
                             f"{instances[iid].status}) but no start was published for it", iids=frozenset({iid})))
    for r in records:
        if r.get("k") == "crash":
            out.append(Violation("process-crashed", f"{r.get('target')} exited by itself (code {r.get('exit_code')}) "
                                 f"at {r.get('at')}s: no fault asked for it"))
    for r in left:
        out.append(Violation("queue-not-empty", f"message {r.get('mid')} ({r.get('subject')}) still in the queue "
                             f"at the end ({r.get('state')}, delivery count {r.get('delivery_count')})",
                             frozenset({str(r.get("mid"))})))
    return Report(campaign, schedule, out, _stats(records, messages, instances, dead, stats))


def _judge_instance(iid: str, starts: list[Message], related: list[Message], inst: Instance | None,
                    dead: dict[str, list[dict[str, Any]]], window: float, slack: float,
                    stats: Counter[str]) -> list[Violation]:
    mids = frozenset(m.mid for m in starts)
    ids = frozenset({iid})
    acked = [m for m in starts if m.acks]
    if inst is None:
        if acked:
            return [Violation("start-lost", f"start of {iid} acknowledged ({len(acked)} message(s), "
                              f"{sum(m.acks for m in acked)} ack(s)) but DTS has no such instance", mids, ids)]
        return []
    out: list[Violation] = []
    if inst.starts != 1:
        out.append(Violation("instance-doubled", f"instance {iid} has {inst.starts} ExecutionStarted events "
                             "(started more than once)", mids, ids))
    names = {m.expect.get("orchestration") for m in starts}
    if inst.name not in names:
        out.append(Violation("start-wrong", f"instance {iid} runs {inst.name!r}, but its starts asked for "
                             f"{sorted(map(str, names))}", mids, ids))
    if inst.input not in [m.expect.get("input") for m in starts]:
        out.append(Violation("start-wrong", f"instance {iid} has input {json.dumps(inst.input)}, which no start "
                             "sent for it", mids, ids))
    if inst.name in APPROVAL_WORKFLOWS:
        return out + _judge_decision(iid, inst, starts, related, dead, window, slack, stats)
    if inst.name == "invoice_payment":
        return out + _judge_invoice(iid, inst, related, dead, window, slack, stats)
    expected = next((m.expect.get("output") for m in starts if m.expect.get("output") is not None), None)
    if inst.status != "COMPLETED":
        out.append(Violation("not-completed", f"instance {iid} ({inst.name}) ended {inst.status}, not COMPLETED",
                             mids, ids))
    elif expected is not None and inst.output != expected:
        out.append(Violation("wrong-output", f"instance {iid} ({inst.name}) returned {json.dumps(inst.output)}, "
                             f"expected {json.dumps(expected)}", mids, ids))
    return out


def _judge_decision(iid: str, inst: Instance, starts: list[Message], related: list[Message],
                    dead: dict[str, list[dict[str, Any]]], window: float, slack: float,
                    stats: Counter[str]) -> list[Violation]:
    """An approval_workflow instance: decided by exactly one of the approvals sent before it finished, or timed out
    when none was, or legitimately left waiting when every such approval expired before the instance appeared."""
    candidates = [m for m in related if m.kind == "approval" and m.role != "approval-late"]
    deciders = [m for m in candidates if m.acks]  # acknowledged: these must decide it
    ids = frozenset({iid})
    mids = frozenset(m.mid for m in related)
    decision = inst.decision
    if inst.status != "COMPLETED":
        expired = [m for m in deciders if any(_not_found_fits(inst, m, window, slack)
                                              for d in dead.get(m.mid, []) if d.get("reason") == "InstanceNotFound")]
        if deciders and len(expired) == len(deciders) and inst.status == "RUNNING":
            stats["instances left waiting: every approval expired before the instance appeared"] += 1
            return []
        return [Violation("not-completed", f"instance {iid} ({inst.name}) ended {inst.status}, not COMPLETED "
                          f"({len(deciders)} approval(s) published for it)", mids, ids)]
    if decision is None:
        if deciders:
            return [Violation("approval-not-applied", f"instance {iid} returned {json.dumps(inst.output)} without a "
                              f"decision although {len(deciders)} approval(s) were acknowledged for it", mids, ids)]
        if inst.output != "Timed out":
            return [Violation("wrong-output", f"instance {iid} had no approval published before it finished, yet "
                              f"returned {json.dumps(inst.output)} (expected \"Timed out\")", mids, ids)]
        return []
    winners = [m for m in candidates if m.expect.get("approver") == decision.get("approver")]
    if not winners:
        return [Violation("unknown-decision", f"instance {iid} was decided by {decision.get('approver')!r}, "
                          "which no approval published for it before it finished names", mids, ids)]
    want = "Approved" if winners[0].expect.get("approved") else "Rejected"
    if inst.output != want or decision.get("approved") is not winners[0].expect.get("approved"):
        return [Violation("wrong-output", f"instance {iid} returned {json.dumps(inst.output)} for approval "
                          f"{winners[0].mid} (expected {want})", mids, ids)]
    return []


def _judge_invoice(iid: str, inst: Instance, related: list[Message], dead: dict[str, list[dict[str, Any]]],
                   window: float, slack: float, stats: Counter[str]) -> list[Violation]:
    """Paid in full by the payments in its currency sent before it finished, each counted exactly once; or left
    waiting when a payment it needed expired before the invoice appeared."""
    invoice = inst.input if isinstance(inst.input, dict) else {}
    payments = [m for m in related if m.kind == "event" and m.role != "event-late"
                and m.expect.get("currency") == invoice.get("currency")]
    ids, mids = frozenset({iid}), frozenset(m.mid for m in related)
    if inst.status != "COMPLETED":
        if inst.status == "RUNNING" and any(_not_found_fits(inst, m, window, slack) for m in payments
                                            for d in dead.get(m.mid, []) if d.get("reason") == "InstanceNotFound"):
            stats["instances left waiting: an event they needed expired before the instance appeared"] += 1
            return []
        return [Violation("not-completed", f"invoice {iid} ended {inst.status}, not COMPLETED ({len(payments)} "
                          "payment(s) in its currency published for it)", mids, ids)]
    out = inst.output if isinstance(inst.output, dict) else {}
    counted = Counter(out.get("payments") or [])
    found: list[Violation] = []
    for m in payments:
        n = counted.pop(m.expect.get("reference"), 0)
        if n > 1:
            found.append(Violation("event-applied-twice", f"payment {m.mid} ({m.expect.get('reference')}) was counted "
                                   f"{n} times by invoice {iid}", frozenset({m.mid}), ids))
    if counted:
        found.append(Violation("unknown-decision", f"invoice {iid} counted payments nobody sent in its currency: "
                               f"{sorted(counted)}", mids, ids))
    want = invoice.get("amount_cents")
    if out.get("status") != "Paid" or out.get("paid_cents") != want:
        found.append(Violation("wrong-output", f"invoice {iid} returned {json.dumps(inst.output)}, expected Paid with "
                               f"{want} cents", mids, ids))
    return found


def _not_found_fits(inst: Instance | None, m: Message, window: float, slack: float) -> bool:
    """InstanceNotFound is right if the instance never existed, or appeared only after the window had closed."""
    if inst is None:
        return True
    return inst.created is not None and inst.created >= m.first_try + window - slack


def _judge_raise(m: Message, inst: Instance | None, copies: list[dict[str, Any]], window: float, slack: float,
                 stats: Counter[str]) -> list[Violation]:
    mids, ids = frozenset({m.mid}), frozenset({m.iid or ""})
    raised = inst.raised_count(m.mid) if inst is not None else 0
    if m.kind == "approval":
        decision = inst.decision if inst is not None else None
        applied = decision is not None and decision.get("approver") == m.expect.get("approver")
    else:  # a declared event is applied once raised; what its workflow made of it is judged with the instance
        applied = raised >= 1
    if raised > 1:
        stats[f"{m.kind}s raised more than once while their instance ran (the workflow takes one per message id)"] += 1
    out: list[Violation] = []
    waits = inst is not None and m.expect.get("name", "ApprovalEvent") in DECLARED.get(str(inst.name), ())
    for d in copies:
        reason = d.get("reason")
        if applied:  # only a copy whose window closed before the instance appeared may also be dead-lettered
            if reason != "InstanceNotFound" or not _not_found_fits(inst, m, window, slack):
                out.append(Violation("applied-and-dead-lettered", f"{m.role} {m.mid} was applied to {m.iid}, yet a "
                                     f"copy was dead-lettered {reason}: {d.get('description')}", mids, ids))
            continue
        fits = {
            "InstanceNotRunning": waits and inst is not None and inst.status in TERMINAL,
            "NotAnApprovalWorkflow": m.kind == "approval" and inst is not None and not waits,
            "UnknownEvent": m.kind == "event" and inst is not None and not waits,
            "InstanceNotFound": _not_found_fits(inst, m, window, slack),
        }.get(str(reason))
        if fits is None:
            out.append(Violation("valid-dead-lettered", f"{m.role} {m.mid} for {m.iid} dead-lettered {reason}: "
                                 f"{d.get('description')}", mids, ids))
        elif not fits:
            created = inst.created - m.first_try if inst is not None and inst.created is not None else None
            state = "no instance" if inst is None else (
                f"instance {inst.name} {inst.status}" + (f", created {created:.1f}s after the approval was first "
                                                         f"published (window {window:g}s)" if created is not None
                                                         else ""))
            out.append(Violation(f"wrong-{str(reason)[0].lower()}{str(reason)[1:]}",
                                 f"{m.role} {m.mid} dead-lettered {reason}, but DTS says: {state}", mids, ids))
    landed = applied or raised >= 1
    if not landed and len(copies) < m.acks:
        out.append(Violation("acknowledged-and-lost", f"{m.role} {m.mid} for {m.iid}: acknowledged {m.acks} time(s), "
                             f"never raised on the instance and only {len(copies)} dead-lettered", mids, ids))
    outcomes = len(copies) + landed  # each needs a copy of its own: more than were published means it doubled
    if not out and outcomes > m.attempts:
        out.append(Violation("reenqueue-doubled", f"{m.role} {m.mid}: {len(copies)} dead letter(s)"
                             + (" and raised on its instance" if landed else "")
                             + f", from {m.attempts} publish attempt(s)", mids, ids))
    return out


def _judge_invalid(m: Message, copies: list[dict[str, Any]]) -> list[Violation]:
    mids = frozenset({m.mid})
    out: list[Violation] = []
    if len(copies) < m.acks:
        out.append(Violation("invalid-not-dead-lettered", f"invalid message {m.mid} (expected "
                             f"{m.expect.get('reason')}): {m.acks} acknowledged, {len(copies)} in the DLQ", mids))
    for d in copies:
        if d.get("reason") != m.expect.get("reason"):
            out.append(Violation("wrong-reason", f"invalid message {m.mid} dead-lettered {d.get('reason')!r}, "
                                 f"expected {m.expect.get('reason')!r}", mids))
        elif not d.get("description"):
            out.append(Violation("no-description", f"invalid message {m.mid} dead-lettered {d.get('reason')} "
                                 "without a description", mids))
    return out


def _stats(records: list[dict[str, Any]], messages: dict[str, Message], instances: dict[str, Instance],
           dead: dict[str, list[dict[str, Any]]], notes: Counter[str]) -> dict[str, Any]:
    faults = Counter(f"{r['kind']} {_target_kind(r['target'])}" for r in records
                     if r.get("k") == "fault" and r.get("phase") == "begin")
    roles = Counter(m.role for m in messages.values())
    end = next((r for r in records if r.get("k") == "end"), {})
    return {
        "faults": dict(sorted(faults.items())),
        "faults_total": sum(faults.values()),
        "messages": len(messages),
        "publishes": sum(1 for r in records if r.get("k") == "send"),
        "acks": sum(m.acks for m in messages.values()),
        "failed_publishes": sum(1 for r in records if r.get("k") == "nack"),
        "roles": dict(sorted(roles.items())),
        "instances": dict(sorted(Counter(f"{i.name} {i.status}" for i in instances.values()).items())),
        "dead_letters": dict(sorted(Counter(str(d.get("reason")) for ds in dead.values() for d in ds).items())),
        "notes": dict(notes),
        "converged": end.get("converged"),
        "drain_seconds": end.get("drain_seconds"),
    }


def _target_kind(target: str) -> str:
    if target.startswith("replica"):
        return "link" if "." in target else "replica"
    return target


def minimal_history(records: list[dict[str, Any]], violation: Violation) -> list[dict[str, Any]]:
    """Only the records about the violation's messages (their publishes, acks, dead letters) and what was observed
    of its instances, in order; other messages aimed at the same instances are left out."""
    return [r for r in records if r.get("mid") in violation.mids
            or (r.get("k") in ("instance", "seen") and r.get("iid") in violation.iids)]


def faults_during(records: list[dict[str, Any]], span: list[dict[str, Any]]) -> list[str]:
    """The faults that began while the given records were unfolding: context for reading a minimal history."""
    times = [r["t"] for r in span if r.get("k") in ("send", "ack", "nack", "seen")]
    if not times:
        return []
    first, last = min(times), max(times) + 60.0
    return [f"{r.get('at', 0):7.2f}s {r['kind']} {r['target']}" for r in records
            if r.get("k") == "fault" and r.get("phase") == "begin" and first - 30.0 <= r["t"] <= last]


def render(report: Report, records: list[dict[str, Any]], *, limit: int = 20) -> str:
    """The violations, each with the seed, the replay command and its minimal history; then the figures."""
    c = report.campaign
    seed = c.get("seed")
    replay = c.get("replay", f"make chaos SEED={seed}")
    lines: list[str] = []
    known = sum(report.known.values())
    if report.violations:
        head = f"{len(report.failures)} VIOLATION(S)" + (f", {known} of a known open finding" if known else "")
        lines.append(f"seed {seed}: {head}   replay: {replay}")
        faults = report.schedule.get("faults", [])
        lines.append(f"schedule ({len(faults)} faults):")
        lines += [f"  {f['at']:7.2f}s  {f['kind']:<9} {f['target']:<13} {f['duration']:.1f}s" for f in faults]
        for v in report.violations[:limit]:
            what = f"KNOWN OPEN FINDING [{v.rule}] ({KNOWN[v.rule]})" if v.rule in KNOWN else f"VIOLATION [{v.rule}]"
            lines.append(f"\n{what} {v.text}")
            span = minimal_history(records, v)
            lines.append(f"  seed {seed}, replay: {replay}; minimal history ({len(span)} records):")
            lines += ["    " + json.dumps(r, separators=(",", ":"), default=str)[:600] for r in span]
            around = faults_during(records, span)
            if around:
                lines.append("  faults meanwhile: " + "; ".join(a.strip() for a in around))
        if len(report.violations) > limit:
            rules = Counter(v.rule for v in report.violations[limit:])
            lines.append(f"\n… and {len(report.violations) - limit} more: {dict(rules)}")
    else:
        lines.append(f"seed {seed}: no violation   replay: {replay}")
    s = report.stats
    lines.append(f"  faults {s.get('faults_total')}: " + ", ".join(f"{k} {v}" for k, v in s.get("faults", {}).items()))
    lines.append(f"  messages {s.get('messages')} ({s.get('publishes')} publish attempts, {s.get('failed_publishes')} "
                 f"failed and retried); dead letters: {s.get('dead_letters')}")
    lines.append(f"  instances: {s.get('instances')}")
    for note, n in s.get("notes", {}).items():
        lines.append(f"  {note}: {n}")
    return "\n".join(lines)
