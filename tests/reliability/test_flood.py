"""An approval flood: 5,000 approvals for instances that never appear, with real starts published during it.

Each such approval is re-enqueued with backoff until its window closes, then dead-lettered `InstanceNotFound`;
the flood must end there with the queue empty, and it must not starve the real starts published meanwhile. The
listener runs with the production defaults (32 concurrent, prefetch 100) but a 30 s window, so the whole flood
plays out in about a minute (the default 300 s window multiplies the handlings, not the shape).

Not starving the starts is checked as an order, not a time: every start published in the first half of the flood
has its instance before the flood's last approval is dead-lettered (a start never waits behind the whole retry
churn, as it would if copies falling due were served first). Printed (`-s`): start latency p50/p99 during the
flood (publish → instance created in DTS; one start every 0.25 s), handlings per approval, and listener CPU
seconds — figures, never asserted.
"""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient

from tests.fixtures.dts import DtsBackend
from tests.reliability.common import (
    QUEUE,
    approval_message,
    dead_letters,
    publish,
    running_stack,
    start_message,
)
from tests.support.wait import until

APPROVALS = 5_000
WINDOW = 30
# About 40 s on an idle 2-core machine (2026-12-06). The wait allows far more, so a slow machine is not a failure;
# a flood that never ends (copies restarting their window) still is, and then the report says where it stood.
FLOOD_WAIT = 600


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(FLOOD_WAIT + 200)
def test_approval_flood_ends_in_the_dlq_and_does_not_starve_starts(tmp_path: Path, dts_backend: DtsBackend,
                                                                     dts_client: Any) -> None:
    run = uuid.uuid4().hex[:6]
    ghosts = [f"ghost-{run}-{i}" for i in range(APPROVALS)]
    with running_stack(tmp_path, dts_backend.connection_string, queue={"lock": "PT30S"},
                       MAX_CONCURRENT_MESSAGES=32, PREFETCH_COUNT=100,
                       APPROVAL_NOT_FOUND_WINDOW_SECONDS=WINDOW) as stack:
        assert stack.listener.proc is not None
        cpu_before = _cpu_seconds(stack.listener.proc.pid)
        published: dict[str, float] = {}  # start instance id → when its send returned (wall clock)
        flood_done = threading.Event()

        def starts() -> None:  # one start every 0.25 s while the flood lasts (bounded: at most 1,200)
            with ServiceBusClient.from_connection_string(stack.connection_string) as sb, \
                    sb.get_queue_sender(QUEUE) as sender:
                for i in range(1200):
                    if flood_done.is_set():
                        return
                    iid = f"real-{run}-{i}"
                    sender.send_messages(start_message("hello_cities", instance_id=iid))
                    published[iid] = time.time()
                    time.sleep(0.25)

        began = time.monotonic()
        publish(stack.connection_string, [approval_message(g, True, "flood") for g in ghosts], batch_size=100)
        starter = threading.Thread(target=starts, daemon=True)
        starter.start()
        try:
            until(lambda: stack.bus.counts(QUEUE)["total"] == 0, timeout=FLOOD_WAIT, interval=0.5,
                  what="the flood to end in the DLQ", on_timeout=lambda: _where_it_stood(stack, run, cpu_before))
        finally:
            flood_done.set()
            starter.join(10)
        flood_seconds = time.monotonic() - began
        cpu = _cpu_seconds(stack.listener.proc.pid) - cpu_before

        dead = dead_letters(stack.connection_string)
        reasons = {d.reason for d in dead}
        assert len(dead) == APPROVALS and reasons == {"InstanceNotFound"}, (len(dead), reasons)
        # The broker moves each message before it answers; the listener logs it once it reads the answer.
        until(lambda: len(_ids(stack.listener.output, run)) >= APPROVALS, timeout=30,
              what="a dead-letter line for each approval")
        assert {d.message_id for d in dead} == {str(m) for m in _ids(stack.listener.output, run)}

        last_dead_letter = max(_dead_lettered_at(stack.listener.output, run))
        half = last_dead_letter - flood_seconds / 2
        latencies, waited_behind_the_churn = [], []
        for iid, sent in published.items():
            state = until(lambda iid=iid: dts_client.get_orchestration_state(iid), timeout=30,
                          what=f"start {iid}")
            created = state.created_at if state.created_at.tzinfo else state.created_at.replace(tzinfo=UTC)
            latencies.append(max(0.0, (created - datetime.fromtimestamp(sent, UTC)).total_seconds()))
            if sent < half and created.timestamp() > last_dead_letter:
                waited_behind_the_churn.append(iid)
        handlings = len(re.findall(rf"settled message_id=\S+ subject=approval instance_id=ghost-{run}-",
                                   stack.listener.output))
        print(f"\nflood of {APPROVALS} approvals: ended in the DLQ after {flood_seconds:.0f}s; "
              f"{handlings / APPROVALS:.1f} handlings per approval; listener CPU {cpu:.0f}s; "
              f"starts during it: {_summary(latencies)}")
        assert stack.listener.alive
        assert len(latencies) >= 20, "too few starts during the flood to judge"
        assert not waited_behind_the_churn, f"starts that waited for the whole flood: {waited_behind_the_churn}"


def _dead_lettered_at(log: str, run: str) -> list[float]:
    """When the listener dead-lettered each ghost approval (the timestamps of its settle lines)."""
    stamps = re.findall(rf"^(\S+Z) \w+ +listener\.settler: settled message_id=\S+ subject=approval "
                        rf"instance_id=ghost-{run}-\S+ action=deadletter", log, re.MULTILINE)
    return [datetime.fromisoformat(stamp).timestamp() for stamp in stamps]


def _where_it_stood(stack: Any, run: str, cpu_before: float) -> str:
    """What a flood that did not end was doing: counts, outcomes so far, the listener's CPU and the machine's load."""
    log = stack.listener.output
    outcomes = re.findall(rf"subject=approval instance_id=ghost-{run}-\S+ action=(\w+)", log)
    tally = {action: outcomes.count(action) for action in sorted(set(outcomes))}
    cpu = _cpu_seconds(stack.listener.proc.pid) - cpu_before if stack.listener.alive else float("nan")
    return (f"counts {stack.bus.counts(QUEUE)}; ghost approval handlings {tally}; listener CPU {cpu:.0f}s; "
            f"load average {os.getloadavg()}\nlistener start:\n{log[:1500]}\nlatest:\n{log[-1500:]}")


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else max(values, default=0.0)


def _summary(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{len(values)} starts, p50 {statistics.median(values):.2f}s p99 {_p99(values):.2f}s max {max(values):.2f}s"


def _ids(log: str, run: str) -> set[str]:
    """Message ids of the ghost approvals the listener dead-lettered (from its settle lines)."""
    return set(re.findall(rf"settled message_id=(\S+) subject=approval instance_id=ghost-{run}-\S+ "
                          r"action=deadletter reason=InstanceNotFound", log))
