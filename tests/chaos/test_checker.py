"""The checker catches what it claims to: a clean history of every story passes, and each injected violation (a lost
start, a doubled instance, a wrong dead-letter reason …) is reported under its rule, with a minimal history that
holds the records about it and nothing else."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos import checker
from tests.chaos.plan import HELLO
from tests.support.processes import REPO

WINDOW = 30.0
P = "c99-"


class Builder:
    """A history as a campaign would record it, written by hand."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.records: list[dict[str, Any]] = [
            {"k": "campaign", "t": 0, "seed": 99, "window": WINDOW, "lock": 5, "prefix": P,
             "replay": "make chaos SEED=99 DURATION=60 REPLICAS=3"},
            {"k": "schedule", "t": 0, "seed": 99, "duration": 60, "replicas": 3,
             "faults": [{"at": 5.0, "kind": "kill9", "target": "replica0", "duration": 2.0, "params": {}}]},
            {"k": "fault", "t": 1004.0, "at": 5.0, "kind": "kill9", "target": "replica0", "phase": "begin"},
        ]

    def tick(self, seconds: float = 0.5) -> float:
        self.t += seconds
        return self.t

    def send(self, mid: str, role: str, *, iid: str | None = None, acked: int = 1, failed: int = 0,
             **expect: Any) -> float:
        first = self.tick()
        for attempt in range(1, failed + acked + 1):
            self.records.append({"k": "send", "t": self.tick(0.01), "mid": mid, "role": role, "iid": iid,
                                 "attempt": attempt, "expect": expect, "subject": role.split("-")[0]})
            ok = attempt > failed
            self.records.append({"k": "ack" if ok else "nack", "t": self.tick(0.01), "mid": mid, "attempt": attempt})
        return first

    def start(self, mid: str, orchestration: str, *, iid: str | None = None, data: Any = None, output: Any = None,
              role: str = "start", **kw: Any) -> float:
        return self.send(mid, role, iid=iid or mid, orchestration=orchestration, input=data, output=output, **kw)

    def approval(self, mid: str, iid: str, approved: bool, role: str = "approval", **kw: Any) -> float:
        return self.send(mid, role, iid=iid, approved=approved, approver=f"approver-{mid}", **kw)

    def instance(self, iid: str, name: str, *, output: Any = None, data: Any = None, status: str = "COMPLETED",
                 custom: Any = None, created: float | None = None, starts: int = 1,
                 raised: tuple[str, ...] = ()) -> None:
        self.records.append({"k": "instance", "t": self.tick(), "iid": iid, "name": name, "status": status,
                             "input": data, "output": output, "custom": custom,
                             "created": created if created is not None else self.t, "starts": starts,
                             "raised": [{"name": "ApprovalEvent", "mid": m} for m in raised]})

    def decided(self, iid: str, approver_mid: str, approved: bool, **kw: Any) -> None:
        custom = {"stage": "decided", "outcome": "Approved" if approved else "Rejected", "approved": approved,
                  "approver": f"approver-{approver_mid}", "comment": None}
        self.instance(iid, "approval_workflow", output=custom["outcome"], data={"item": iid}, custom=custom, **kw)

    def dead(self, mid: str, reason: str, description: str = "explained") -> None:
        self.records.append({"k": "dead", "t": self.tick(), "mid": mid, "reason": reason, "description": description})


def clean() -> list[dict[str, Any]]:
    """One of every story, each ending as it should."""
    b = Builder()
    b.start(f"{P}hello", "hello_cities", output=HELLO)
    b.start(f"{P}hello", "hello_cities", output=HELLO, role="start-republish")
    b.start(f"{P}m-app", "approval_workflow", iid=f"{P}app", data={"item": f"{P}app"}, failed=2)
    b.approval(f"{P}a1", f"{P}app", True)
    b.approval(f"{P}a1", f"{P}app", True, role="approval-republish")
    b.approval(f"{P}a2", f"{P}app", False, role="approval-competing")  # raised, but the workflow took a1
    b.approval(f"{P}a3", f"{P}app", False, role="approval-competing")  # came once it had finished
    b.start(f"{P}m-app2", "approval_workflow", iid=f"{P}app", data={"again": True}, role="start-again")
    early = b.approval(f"{P}e1", f"{P}early", False, role="approval-early")
    b.start(f"{P}m-early", "approval_workflow", iid=f"{P}early", data={"item": f"{P}early"})
    stranded_at = b.approval(f"{P}e2", f"{P}slow", True, role="approval-early")
    b.start(f"{P}m-slow", "approval_workflow", iid=f"{P}slow", data={"item": f"{P}slow"})
    b.approval(f"{P}u1", f"{P}nobody", True, role="approval-unknown")
    b.start(f"{P}timeout", "approval_workflow", data={"timeout_seconds": 3}, output="Timed out")
    b.approval(f"{P}l1", f"{P}timeout", True, role="approval-late")
    b.approval(f"{P}x1", f"{P}hello", True, role="approval-misdirected")
    b.send(f"{P}bad1", "invalid", reason="InvalidJson")
    b.send(f"{P}bad2", "invalid", reason="TooLarge")
    b.send(f"{P}bad2", "invalid-republish", reason="TooLarge")
    b.start(f"{P}never", "hello_cities", output=HELLO, acked=0, failed=1)  # never acknowledged, never stored
    invoice = {"invoice": "inv-1", "amount_cents": 300, "currency": "EUR", "due_seconds": 3600}
    b.start(f"{P}m-inv", "invoice_payment", iid=f"{P}inv", data=invoice)
    for mid, cents, currency, role in (("p1", 100, "EUR", "event"), ("p2", 200, "EUR", "event"),
                                       ("p2", 200, "EUR", "event-republish"), ("p3", 50, "USD", "event-foreign"),
                                       ("p4", 100, "EUR", "event-late")):
        b.send(f"{P}{mid}", role, iid=f"{P}inv", name="PaymentReceived", cents=cents, currency=currency,
               reference=f"ref-{mid}")
    b.send(f"{P}p5", "event-misdirected", iid=f"{P}app", name="PaymentReceived", cents=100, currency="EUR",
           reference="ref-p5")
    b.instance(f"{P}hello", "hello_cities", output=HELLO)
    b.instance(f"{P}inv", "invoice_payment", data=invoice, raised=(f"{P}p1", f"{P}p2", f"{P}p2", f"{P}p3"),
               output={"status": "Paid", "invoice": "inv-1", "paid_cents": 300, "payments": ["ref-p2", "ref-p1"],
                       "receipt": "r-1"})
    b.decided(f"{P}app", f"{P}a1", True, raised=(f"{P}a1", f"{P}a2"))
    b.decided(f"{P}early", f"{P}e1", False, created=early + 2.0, raised=(f"{P}e1",))
    b.instance(f"{P}slow", "approval_workflow", status="RUNNING", data={"item": f"{P}slow"},
               custom={"stage": "awaiting_approval"}, created=stranded_at + WINDOW + 1.0)
    b.instance(f"{P}timeout", "approval_workflow", output="Timed out", data={"timeout_seconds": 3},
               custom={"stage": "timed_out"})
    b.dead(f"{P}a3", "InstanceNotRunning")
    b.dead(f"{P}e2", "InstanceNotFound")
    b.dead(f"{P}u1", "InstanceNotFound")
    b.dead(f"{P}l1", "InstanceNotRunning")
    b.dead(f"{P}x1", "NotAnApprovalWorkflow")
    b.dead(f"{P}p4", "InstanceNotRunning")
    b.dead(f"{P}p5", "UnknownEvent")
    b.dead(f"{P}bad1", "InvalidJson")
    b.dead(f"{P}bad2", "TooLarge")
    b.dead(f"{P}bad2", "TooLarge")
    b.records.append({"k": "end", "t": b.tick(), "converged": True})
    return b.records


def test_a_clean_history_of_every_story_has_no_violation() -> None:
    report = checker.check(clean())
    assert report.violations == []
    assert report.stats["messages"] == 23
    assert report.stats["notes"] == {
        "instances left waiting: every approval expired before the instance appeared": 1,
        "events raised more than once while their instance ran (the workflow takes one per message id)": 1}
    assert report.stats["faults"] == {"kill9 replica": 1}


def _where(records: list[dict[str, Any]], k: str, **match: Any) -> dict[str, Any]:
    found = [r for r in records if r["k"] == k and all(r.get(key) == v for key, v in match.items())]
    assert found, (k, match)
    return found[0]


def _drop(k: str, **match: Any) -> Callable[[list[dict[str, Any]]], None]:
    return lambda records: records.remove(_where(records, k, **match))


def _set(k: str, match: dict[str, Any], **values: Any) -> Callable[[list[dict[str, Any]]], None]:
    return lambda records: _where(records, k, **match).update(values)


def _add(**record: Any) -> Callable[[list[dict[str, Any]]], None]:
    return lambda records: records.append({"t": 9999.0, **record})


def _decided_by(approver: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(records: list[dict[str, Any]]) -> None:
        _where(records, "instance", iid=f"{P}app")["custom"]["approver"] = approver
    return change


INJECTED: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str, str]] = {
    # name: (the change, the rule it must be reported under, an id the minimal history must show)
    "a lost start": (_drop("instance", iid=f"{P}hello"), "start-lost", f"{P}hello"),
    "a doubled instance": (_set("instance", {"iid": f"{P}early"}, starts=2), "instance-doubled", f"{P}m-early"),
    "an instance of another workflow": (_set("instance", {"iid": f"{P}hello"}, name="fan_out_fan_in"), "start-wrong",
                                        f"{P}hello"),
    "an input nobody sent": (_set("instance", {"iid": f"{P}app"}, input={"item": "forged"}), "start-wrong",
                             f"{P}m-app"),
    "a wrong DLQ reason": (_set("dead", {"mid": f"{P}bad1"}, reason="SchemaViolation"), "wrong-reason", f"{P}bad1"),
    "a dead letter without a description": (_set("dead", {"mid": f"{P}bad1"}, description=""), "no-description",
                                            f"{P}bad1"),
    "an invalid message lost": (_drop("dead", mid=f"{P}bad1"), "invalid-not-dead-lettered", f"{P}bad1"),
    "one copy of a republished invalid message lost": (_drop("dead", mid=f"{P}bad2"), "invalid-not-dead-lettered",
                                                       f"{P}bad2"),
    "more dead letters than publishes": (_add(k="dead", mid=f"{P}bad1", reason="InvalidJson", description="x"),
                                         "dead-letter-doubled", f"{P}bad1"),
    "a valid start dead-lettered": (_add(k="dead", mid=f"{P}hello", reason="MaxDeliveryCountExceeded"),
                                    "valid-dead-lettered", f"{P}hello"),
    "an acknowledged approval lost": (_drop("dead", mid=f"{P}a3"), "acknowledged-and-lost", f"{P}a3"),
    "an applied approval also dead-lettered": (_add(k="dead", mid=f"{P}a1", reason="InstanceNotRunning"),
                                               "applied-and-dead-lettered", f"{P}a1"),
    "an early approval given up while its instance existed": (
        _set("instance", {"iid": f"{P}slow"}, created=1000.0), "wrong-instanceNotFound", f"{P}e2"),
    "InstanceNotRunning for an instance that never existed": (_set("dead", {"mid": f"{P}u1"},
                                                                   reason="InstanceNotRunning"),
                                                              "wrong-instanceNotRunning", f"{P}u1"),
    "an approval dead-lettered for a reason no approval may have": (
        _set("dead", {"mid": f"{P}l1"}, reason="SchemaViolation"), "valid-dead-lettered", f"{P}l1"),
    "an instance that never finished": (_set("instance", {"iid": f"{P}timeout"}, status="RUNNING"), "not-completed",
                                        f"{P}timeout"),
    "a failed instance": (_set("instance", {"iid": f"{P}hello"}, status="FAILED"), "not-completed", f"{P}hello"),
    "a wrong output": (_set("instance", {"iid": f"{P}hello"}, output="Hello Nowhere!"), "wrong-output", f"{P}hello"),
    "an approval not applied (timed out instead)": (
        _set("instance", {"iid": f"{P}app"}, output="Timed out", custom={"stage": "timed_out"}),
        "approval-not-applied", f"{P}a1"),
    "a decision nobody sent": (_decided_by("mallory"), "unknown-decision", f"{P}app"),
    "a decision with the opposite outcome": (_set("instance", {"iid": f"{P}app"}, output="Rejected"), "wrong-output",
                                             f"{P}app"),
    "an instance nobody started": (_add(k="instance", iid=f"{P}ghost", name="hello_cities", status="COMPLETED",
                                        starts=1, raised=[]), "phantom-instance", f"{P}ghost"),
    "a message left in the queue": (_add(k="left", mid=f"{P}hello", subject="start", state="ACTIVE"),
                                    "queue-not-empty", f"{P}hello"),
    "a dead letter nobody sent": (_add(k="dead", mid="stranger", reason="InvalidJson"), "unknown-dead-letter",
                                  "stranger"),
    "a payment counted twice": (_set("instance", {"iid": f"{P}inv"},
                                     output={"status": "Paid", "paid_cents": 300,
                                             "payments": ["ref-p1", "ref-p1", "ref-p2"]}),
                                "event-applied-twice", f"{P}p1"),
    "a payment in another currency counted": (_set("instance", {"iid": f"{P}inv"},
                                                   output={"status": "Paid", "paid_cents": 300,
                                                           "payments": ["ref-p1", "ref-p2", "ref-p3"]}),
                                              "unknown-decision", f"{P}inv"),
    "an invoice never paid": (_set("instance", {"iid": f"{P}inv"}, status="RUNNING", output=None),
                              "not-completed", f"{P}p1"),
    "a payment acknowledged and lost": (_set("instance", {"iid": f"{P}inv"}, raised=[]), "acknowledged-and-lost",
                                        f"{P}p1"),
    "UnknownEvent for an instance that waits for the event": (_set("dead", {"mid": f"{P}p4"}, reason="UnknownEvent"),
                                                              "wrong-unknownEvent", f"{P}p4"),
    "an approval refused as NotAnApprovalWorkflow by an approval workflow": (
        _set("dead", {"mid": f"{P}a3"}, reason="NotAnApprovalWorkflow"), "wrong-notAnApprovalWorkflow", f"{P}a3"),
    "a campaign that stopped before its outcomes were read": (_drop("end"), "history-incomplete", "no end record"),
    "a replica that crashed": (_add(k="crash", target="replica1", exit_code=-11, at=12.0), "process-crashed",
                               "replica1"),
}


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_each_injected_violation_is_reported_with_its_minimal_history(name: str) -> None:
    change, rule, shows = INJECTED[name]
    records = copy.deepcopy(clean())
    change(records)
    report = checker.check(records)
    rules = [v.rule for v in report.violations]
    assert rule in rules, f"{name}: reported {rules}"
    violation = next(v for v in report.violations if v.rule == rule)
    text = checker.render(report, records)
    assert f"VIOLATION [{rule}]" in text and "seed 99" in text and "replay: make chaos SEED=99" in text
    assert "kill9     replica0" in text  # the schedule is printed with it
    assert shows in text
    span = checker.minimal_history(records, violation)
    if rule not in ("process-crashed", "history-incomplete"):
        assert span, "a violation about messages must show the records about them"
    unrelated = {f"{P}bad2", f"{P}x1", f"{P}never"} - {shows}
    assert not [r for r in span if r.get("mid") in unrelated], "the minimal history holds only what it is about"


def test_a_start_never_acknowledged_may_be_missing_but_not_doubled() -> None:
    records = clean()
    assert not [v for v in checker.check(records).violations if f"{P}never" in v.mids]
    records.append({"k": "instance", "t": 9999.0, "iid": f"{P}never", "name": "hello_cities", "status": "COMPLETED",
                    "output": HELLO, "input": None, "starts": 2, "raised": []})
    assert [v.rule for v in checker.check(records).violations] == ["instance-doubled"]


def test_the_checker_imports_nothing_of_the_product() -> None:
    """Independent of the listener: a bug there cannot hide in a helper the checker shares."""
    probe = ("import sys, tests.chaos.checker; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'listener', 'sbworker', 'orchestrations', 'activities', 'localbus', 'localdts'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_known_open_finding_is_reported_but_does_not_fail_the_campaign() -> None:
    """An approval whose re-enqueue doubled (its instance never came, so two dead letters for one publish)."""
    records = clean()
    records.append({"k": "dead", "t": 9999.0, "mid": f"{P}u1", "reason": "InstanceNotFound", "description": "x"})
    report = checker.check(records)
    assert [v.rule for v in report.violations] == ["reenqueue-doubled"]
    assert report.ok and report.failures == []
    text = checker.render(report, records)
    assert "0 VIOLATION(S), 1 of a known open finding" in text
    assert "KNOWN OPEN FINDING [reenqueue-doubled] (finding F2, documented in README.md" in text
    assert "Known limitation: an early event can wait twice" in text
    assert f"{P}u1" in text and report.known == {"reenqueue-doubled": 1}


def _late_instance(republished: bool) -> list[dict[str, Any]]:
    """An approval whose first copy expired (the instance appeared after the window) and that was applied too."""
    b = Builder()
    first = b.approval(f"{P}r1", f"{P}late", True, role="approval-early")
    if republished:
        b.approval(f"{P}r1", f"{P}late", True, role="approval-republish")
    b.start(f"{P}m-late", "approval_workflow", iid=f"{P}late", data={"item": f"{P}late"})
    b.decided(f"{P}late", f"{P}r1", True, created=first + WINDOW + 2.0, raised=(f"{P}r1",))
    b.dead(f"{P}r1", "InstanceNotFound")
    b.records.append({"k": "end", "t": b.tick(), "converged": True})
    return b.records


def test_a_republished_approval_may_expire_once_and_be_applied_once() -> None:
    assert checker.check(_late_instance(republished=True)).violations == []


def test_one_publish_both_expired_and_applied_is_the_known_doubled_reenqueue() -> None:
    report = checker.check(_late_instance(republished=False))
    assert [v.rule for v in report.violations] == ["reenqueue-doubled"] and report.ok


def test_one_publish_dead_lettered_twice_as_too_late_is_the_known_doubled_reenqueue() -> None:
    records = clean()
    records.append({"k": "dead", "t": 9999.0, "mid": f"{P}a3", "reason": "InstanceNotRunning", "description": "x"})
    report = checker.check(records)
    assert [v.rule for v in report.violations] == ["reenqueue-doubled"] and report.ok


def test_each_known_finding_names_a_readme_section_that_exists() -> None:
    """A known finding passes campaigns only because the README documents it: the section it names must be there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for rule, text in checker.KNOWN.items():
        title = text.split("'")[1]
        assert f"\n### {title}\n" in readme, (rule, title)
