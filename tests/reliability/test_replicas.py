"""Three `sbworker run` replicas (listener + co-hosted DTS worker each) compete for one queue while 1,000 mixed
messages flow; one is killed with -9 mid-stream and another is SIGTERMed later.

What the killed replica held (its prefetched and in-flight messages, and the DTS work items its worker had
taken) must be handled by the others after lock expiry (5 s) and localdts's re-offer; the SIGTERMed one settles
its in-flight messages and exits 0. In the end: every message settled, no instance twice (one ExecutionStarted
per history), every approval applied, no valid message dead-lettered, the queue empty.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from pathlib import Path

import pytest

from localdts import LocalDts
from sbworker.core import clients
from sbworker.core.config import parse_dts
from tests.reliability import verify, workload
from tests.reliability.common import Publisher, durable_bus, queue_total
from tests.reliability.netstack import started_more_than_once
from tests.support.processes import LISTENING, Process, sbworker_env
from tests.support.wait import until

# A final settlement; `retrylater` is not one: the early approval's copy is a new message with the same id.
SETTLED = re.compile(r"settled message_id=(\S+) .*? action=(?!retrylater)\S+ .*? delivery_count=(\d+)")


@pytest.mark.timeout(300)
def test_three_replicas_one_killed_one_terminated_settle_everything_once(tmp_path: Path) -> None:
    run = f"rep-{uuid.uuid4().hex[:6]}"
    w = workload.mixed(run, starts=400, duplicates=200, approvals=200, invalid=200, seed=31)
    dts = LocalDts(port=0, fsync=False).start()
    client = clients.dts_client(parse_dts(dts.connection_string))
    try:
        with durable_bus(tmp_path, lock="PT5S") as bus:
            env = sbworker_env(bus.connection_string, dts.connection_string, MAX_CONCURRENT_MESSAGES=16,
                               PREFETCH_COUNT=10, MAX_MESSAGE_BYTES=workload.MAX_MESSAGE_BYTES,
                               APPROVAL_NOT_FOUND_WINDOW_SECONDS=180, SHUTDOWN_GRACE_SECONDS=10)
            replicas = [Process(["run"], env, tmp_path / f"replica{i}.log", ready=LISTENING) for i in range(3)]
            try:
                for replica in replicas:
                    replica.start()
                killed, terminated, survivor = replicas
                publisher = Publisher(bus.connection_string, w, batch=50, pause=0.05)
                publisher.start()
                # Mid-stream: 300 settled and a backlog, so the victim holds prefetched and in-flight messages.
                until(lambda: publisher.sent - queue_total(bus) >= 300 and queue_total(bus) >= 20, timeout=90,
                           what="300 settled with a backlog", interval=0.02)
                killed.kill9()
                until(lambda: publisher.sent - queue_total(bus) >= 600, timeout=90, what="600 settled")
                assert terminated.terminate() == 0, terminated.output[-3000:]
                publisher.join(120)
                assert publisher.error is None, publisher.error
                assert publisher.sent == len(w)
                until(lambda: verify.all_settled(bus, client, w), timeout=150, interval=0.5,
                           what="every message settled and every approval applied",
                           on_timeout=lambda: verify.progress(bus, client, w) + "\n" + survivor.output[-3000:])
                assert survivor.alive, survivor.output[-4000:]
                # The workers ran in the replicas: "no instance twice" is read from each history instead.
                found = [p for p in verify.problems(bus, client, w, run) if "its first activity ran" not in p]
                found += started_more_than_once(client, w.start_inputs)
                assert not found, "\n".join(found[:40])

                settled = {i: [(m, int(d)) for m, d in SETTLED.findall(r.output)] for i, r in enumerate(replicas)}
                ids = Counter(str(m.message_id) for m in w.messages)
                unique = {mid for mid, n in ids.items() if n == 1}  # a publisher retry reuses its message id
                per_message = Counter(m for lines in settled.values() for m, _ in lines if m in unique)
                # Outcomes were checked in the broker and DTS above. A log line may be missing only where kill -9
                # came between a settlement and its log line: at most what the victim held (16 + prefetch 10).
                missing = unique - set(per_message)
                assert len(missing) <= 26, f"{len(missing)} never logged as settled: {sorted(missing)[:5]}"
                # Settled twice only when the killed replica's settlement died with it: then the second is a
                # redelivery (delivery_count >= 1) and, being idempotent, changed nothing.
                redelivered = {m for i in (1, 2) for m, d in settled[i] if d >= 1}
                twice = {m for m, n in per_message.items() if n > 1}
                assert twice <= redelivered, f"settled twice without a redelivery: {sorted(twice - redelivered)[:5]}"
                taken_over = len(redelivered)
                print(f"\nsettled by replica: killed {len(settled[0])}, terminated {len(settled[1])}, "
                      f"survivor {len(settled[2])}; redelivered after the kill and handled by the others: "
                      f"{taken_over}")
                assert taken_over > 0, "the killed replica held nothing (prefetch 10 under a backlog should)"
                assert survivor.terminate() == 0
            finally:
                for replica in replicas:
                    replica.close()
    finally:
        client.close()
        dts.stop(grace=0)
