"""Session mode under competing replicas: 1,000 messages over 50 sessions, three `sbworker run` replicas
(SERVICEBUS_SESSIONS=true, listener and worker each), one killed with -9 mid-stream.

Each session is one customer's stream: ten approval workflows, each start followed by its approval, all with the
session's id. What must hold, each read from where it lives:
- per-session order, from DTS: each session's instances were created in publishing order, and no approval ever
  waited for its instance (no replica logged a re-enqueue): every approval was handled after its start;
- no session handled by two replicas at once, from the replicas' logs: per session, the spans between a replica's
  "accepted session" and "released session" lines (or its kill) never overlap another replica's, and every
  message a replica settled in that session lies inside one of its own spans;
- the sessions the killed replica held resume elsewhere once their session locks (5 s) expire;
- nothing lost or doubled, from DTS and the broker: every instance started once and approved once, the queue and
  its dead-letter queue empty.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage
from durabletask.history import EventRaisedEvent

from localdts import LocalDts
from sbworker.core import clients
from sbworker.core.codes import APPROVAL_EVENT
from sbworker.core.config import parse_dts
from tests.reliability.common import QUEUE, dead_letters, durable_bus, publish, queue_total
from tests.reliability.netstack import started_more_than_once
from tests.support.processes import LISTENING, Process, sbworker_env
from tests.support.wait import until

SESSIONS = 50
WORKFLOWS = 10  # per session: a start and its approval each, so 1,000 messages in all
LINE = re.compile(r"^(\S+Z) \S+\s+listener\.sessions: (accepted|released) session (\S+) ", re.MULTILINE)
SETTLED = re.compile(r"^(\S+Z) .*?settled message_id=(\S+) .*? session_id=(\S+)$", re.MULTILINE)


def messages(run: str) -> list[ServiceBusMessage]:
    """Round by round, so that the sessions fill side by side: start k then approval k of every session."""
    out = []
    for k in range(WORKFLOWS):
        for s in range(SESSIONS):
            session, iid = f"{run}-s{s}", f"{run}-s{s}-{k}"
            out.append(ServiceBusMessage(json.dumps({"orchestration": "approval_workflow", "instance_id": iid,
                                                     "input": {"timeout_seconds": 3600}}),
                                         subject="start", message_id=f"start-{iid}", session_id=session,
                                         content_type="application/json"))
            out.append(ServiceBusMessage(json.dumps({"instance_id": iid, "approved": True, "approver": "ops"}),
                                         subject="approval", message_id=f"approve-{iid}", session_id=session,
                                         content_type="application/json"))
    return out


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def spans(log: str, end: float) -> dict[str, list[tuple[float, float]]]:
    """Per session, when this replica held it; a span still open at the end of its log ends at `end`."""
    held: dict[str, list[tuple[float, float]]] = defaultdict(list)
    opened: dict[str, float] = {}
    for stamp, what, session in LINE.findall(log):
        if what == "accepted":
            assert session not in opened, f"{session} accepted twice by one replica without a release"
            opened[session] = seconds(stamp)
        else:
            held[session].append((opened.pop(session), seconds(stamp)))
    for session, since in opened.items():
        held[session].append((since, end))
    return held


@pytest.mark.timeout(600)
def test_fifty_sessions_over_three_replicas_one_killed_keep_their_order_and_lose_nothing(tmp_path: Path) -> None:
    run = f"ses-{uuid.uuid4().hex[:6]}"
    sent = messages(run)
    iids = [f"{run}-s{s}-{k}" for s in range(SESSIONS) for k in range(WORKFLOWS)]
    dts = LocalDts(port=0, fsync=False).start()
    client = clients.dts_client(parse_dts(dts.connection_string))
    try:
        with durable_bus(tmp_path, lock="PT5S", RequiresSession=True) as bus:
            env = sbworker_env(bus.connection_string, dts.connection_string, SERVICEBUS_QUEUE=QUEUE,
                               SERVICEBUS_SESSIONS="true", MAX_CONCURRENT_SESSIONS=8, PREFETCH_COUNT=10,
                               SHUTDOWN_GRACE_SECONDS=10, APPROVAL_NOT_FOUND_WINDOW_SECONDS=180)
            replicas = [Process(["run"], env, tmp_path / f"replica{i}.log", ready=LISTENING) for i in range(3)]
            try:
                for replica in replicas:
                    replica.start()
                victim = replicas[0]
                publish(bus.connection_string, sent[:600])
                # Mid-stream: the victim holds sessions, with messages in hand and in its buffer.
                until(lambda: 600 - queue_total(bus) >= 200 and "accepted session" in victim.output,
                      timeout=120, what="200 handled", interval=0.02,
                      on_timeout=lambda: f"queue {bus.counts(QUEUE)}\n{victim.output[-3000:]}")
                killed_at = time.time()
                victim.kill9()
                publish(bus.connection_string, sent[600:])

                def approved() -> bool:
                    return queue_total(bus) == 0 and all(
                        (s := client.get_orchestration_state(iid)) is not None and s.serialized_output == '"Approved"'
                        for iid in iids)

                until(approved, timeout=300, interval=0.5, what="every workflow approved, the queue empty",
                      on_timeout=lambda: f"queue {bus.counts(QUEUE)}\n{replicas[1].output[-3000:]}")

                # Nothing lost or doubled.
                assert dead_letters(bus.connection_string) == []
                assert started_more_than_once(client, iids) == []
                raised = {iid: sum(isinstance(e, EventRaisedEvent) and e.name == APPROVAL_EVENT
                                   for e in client.get_orchestration_history(iid)) for iid in iids}
                assert {iid: n for iid, n in raised.items() if n != 1} == {}

                # Per-session order: instances created in publishing order; no approval waited for its start.
                created = {iid: client.get_orchestration_state(iid).created_at.timestamp() for iid in iids}
                for s in range(SESSIONS):
                    times = [created[f"{run}-s{s}-{k}"] for k in range(WORKFLOWS)]
                    assert times == sorted(times), f"session {s} out of order"
                logs = [r.output for r in replicas]
                assert not [line for log in logs for line in log.splitlines() if "action=retrylater" in line]

                # One replica per session at a time, and every settlement inside its replica's own span.
                held = [spans(log, killed_at if r is victim else time.time()) for r, log in zip(replicas, logs,
                                                                                                 strict=True)]
                for session in {s for h in held for s in h}:
                    owned = sorted((a, b, i) for i, h in enumerate(held) for a, b in h.get(session, []))
                    for (_a, end, i), (start, _b, j) in itertools.pairwise(owned):
                        assert i == j or end <= start, f"{session} held by replicas {i} and {j} at once: {owned}"
                for i, log in enumerate(logs):
                    for stamp, mid, session in SETTLED.findall(log):
                        t = seconds(stamp)
                        assert any(a <= t <= b for a, b in held[i].get(session, [])), \
                            f"replica {i} settled {mid} of {session} outside its hold"

                # The killed replica's sessions resumed on the others once their locks expired.
                orphaned = [s for s, h in held[0].items() if h[-1][1] == killed_at]
                assert orphaned, "the victim held no session when it was killed"
                for session in orphaned:
                    assert any(a > killed_at for h in held[1:] for a, _b in h.get(session, [])), session
                print(f"\n{len(orphaned)} session(s) held by the killed replica resumed elsewhere; settled per "
                      f"replica: {[len(SETTLED.findall(log)) for log in logs]}")
                for replica in replicas[1:]:
                    assert replica.terminate() == 0, replica.output[-3000:]
            finally:
                for replica in replicas:
                    replica.close()
    finally:
        client.close()
        dts.stop()
