"""Faults around the listener process: a 10 s DTS outage, a localbus restart, handling that outlives the lock."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from listener import service
from sbworker.core import clients
from tests.fixtures.dts import DtsBackend, start_backend
from tests.reliability import verify, workload
from tests.reliability.common import (
    approval_message,
    awaiting_approval,
    dead_letters,
    decision,
    peek_all,
    queue_total,
    running_stack,
    start_message,
)
from tests.support.wait import until


@dataclass
class OwnDts:
    """A DTS backend this test may stop, with a worker and a client of its own."""

    backend: DtsBackend
    client: DurableTaskSchedulerClient


@pytest.fixture
def own_dts() -> Iterator[OwnDts]:
    backend = start_backend()
    worker = service.dts_worker(backend.settings)
    worker.start()
    client = clients.dts_client(backend.settings)
    try:
        yield OwnDts(backend, client)
    finally:
        client.close()
        worker.stop()
        backend.stop()


def _get(client: Any, iid: str) -> Any:
    """get_orchestration_state that reports an unreachable backend as 'not yet'."""
    try:
        return client.get_orchestration_state(iid)
    except Exception:
        return None


@pytest.mark.timeout(180)
def test_dts_outage_of_10s_dead_letters_nothing_and_everything_is_processed_after(tmp_path: Path,
                                                                                  own_dts: OwnDts) -> None:
    run = uuid.uuid4().hex[:8]
    waiting = [f"out-{run}-w{i}" for i in range(20)]
    during = [f"out-{run}-d{i}" for i in range(40)]
    dts = own_dts.client
    with running_stack(tmp_path, own_dts.backend.connection_string, queue={"lock": "PT30S"},
                       MAX_CONCURRENT_MESSAGES=8) as stack:
        stack.publish([start_message("approval_workflow", input={"n": i}, instance_id=iid)
                       for i, iid in enumerate(waiting)])
        until(lambda: all((s := _get(dts, iid)) and awaiting_approval(s) for iid in waiting), timeout=60,
                   what="instances waiting for approval")
        own_dts.backend.stop()
        outage_began = time.monotonic()
        stack.publish([approval_message(iid, i % 2 == 0, f"approver-{i}") for i, iid in enumerate(waiting)]
                      + [start_message("approval_workflow", input={"n": i}, instance_id=iid)
                         for i, iid in enumerate(during)])
        until(lambda: time.monotonic() - outage_began >= 10 or not stack.listener.alive, timeout=15,
                   what="the outage", interval=0.2)
        assert stack.listener.alive, stack.listener.output[-4000:]
        assert dead_letters(stack.connection_string) == [], "dead-lettered because DTS was down"
        own_dts.backend.restart()
        until(lambda: queue_total(stack.bus) == 0, timeout=90, what="everything processed after recovery",
                   on_timeout=lambda: stack.listener.output[-3000:])
        for i, iid in enumerate(waiting):
            state = until(lambda iid=iid: (s := _get(dts, iid)) and decision(s) and s, timeout=30,
                               what=f"approval of {iid} applied")
            assert json.loads(state.serialized_output) == ("Approved" if i % 2 == 0 else "Rejected")
            assert decision(state)["approver"] == f"approver-{i}"
        missing = [iid for iid in during if _get(dts, iid) is None]
        assert missing == [], f"starts published during the outage never arrived: {missing}"
        assert dead_letters(stack.connection_string) == []
        assert stack.listener.alive
        assert stack.listener.terminate() == 0


@pytest.mark.timeout(180)
def test_handling_that_outlives_the_lock_keeps_it_and_settles_once(tmp_path: Path, own_dts: OwnDts) -> None:
    """DTS is down for 12 s (inside the 20 s transient-retry budget) under 5 s locks (Service Bus's minimum): the
    listener keeps retrying while its lock renewal keeps the locks, so no message is redelivered, and each is
    settled exactly once."""
    run = uuid.uuid4().hex[:8]
    ids = [f"slow-{run}-{i}" for i in range(6)]
    with running_stack(tmp_path, own_dts.backend.connection_string, queue={"lock": "PT5S"}) as stack:
        own_dts.backend.stop()
        stack.publish([start_message("hello_cities", message_id=iid) for iid in ids])
        until(lambda: stack.bus.counts("workflow-requests")["locked"] == len(ids), timeout=10,
                   what="all locked by the listener")
        locked_at = time.monotonic()
        # Two whole lock durations later the same deliveries are still locked: renewed, never expired.
        until(lambda: time.monotonic() - locked_at >= 11, timeout=15, what="two lock durations", interval=0.2)
        held = {str(m.message_id): m for m in peek_all(stack.connection_string)}
        assert set(held) == set(ids)
        assert all(m.delivery_count == 0 for m in held.values()), {k: m.delivery_count for k, m in held.items()}
        assert stack.bus.counts("workflow-requests")["locked"] == len(ids)
        own_dts.backend.restart()
        stack.drained(timeout=40)
        assert all(_get(own_dts.client, iid) is not None for iid in ids)
        assert dead_letters(stack.connection_string) == []
        # The queue is empty once the broker took the completions; the listener logs each once it reads the answer.
        until(lambda: all(f"settled message_id={iid} " in stack.listener.output for iid in ids),
              what="a settlement line for each message")
        log = stack.listener.output
        for iid in ids:
            assert log.count(f"settled message_id={iid} ") == 1, log[-3000:]
        assert "could not settle" not in log and "delivery_count=1" not in log


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("dts_worker")
def test_localbus_restart_mid_stream_loses_nothing(tmp_path: Path, dts_backend: DtsBackend, dts_client: Any) -> None:
    run = f"lbr-{uuid.uuid4().hex[:8]}"
    w = workload.mixed(run, starts=120, duplicates=40, approvals=60, invalid=30, seed=11)
    with running_stack(tmp_path, dts_backend.connection_string, queue={"lock": "PT5S"},
                       MAX_MESSAGE_BYTES=workload.MAX_MESSAGE_BYTES, APPROVAL_NOT_FOUND_WINDOW_SECONDS=120) as stack:
        stack.publish(w.messages)
        until(lambda: len(w) - queue_total(stack.bus) >= 60, timeout=60, what="60 settled")
        assert queue_total(stack.bus) > 0
        stack.bus.stop()  # connections cut mid-settlement; sqlite keeps the messages, not the locks
        stack.bus.start()  # same port
        # Reconnection is judged by outcomes only: sometimes the SDK re-opens its links by itself and the listener
        # never sees an error (no new "listening on queue" line), sometimes the listener's session restarts.
        until(lambda: verify.all_settled(stack.bus, dts_client, w), timeout=150, interval=0.5,
                   what="everything settled after the restart",
                   on_timeout=lambda: verify.progress(stack.bus, dts_client, w))
        found = verify.problems(stack.bus, dts_client, w, run)
        assert not found, "\n".join(found[:40])
        assert stack.listener.alive
