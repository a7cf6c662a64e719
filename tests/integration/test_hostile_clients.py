"""Hostile and careless publishers against the listener: nothing lost, no stall, every refusal explained.

Raw proton clients send what the azure-servicebus SDK would never build (a `char` property, a 200-character
message id); the SDK sends the rest. Outcomes are read from DTS and the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import proton
import pytest
from azure.servicebus import ServiceBusSubQueue

from localbus import LocalBus
from sbworker.core.codes import PROP_FIRST_ATTEMPT, PROP_RETRIES
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend
from tests.integration.harness import QUEUE, Harness, listener_settings
from tests.localbus.rawclient import RawClient
from tests.support.processes import sbworker, sbworker_env
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("dts_worker")


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalBus]:
    queues = {QUEUE: {"LockDuration": "PT30S", "MaxDeliveryCount": 10}}
    with LocalBus(port=0, queues=queues, data_path=tmp_path / "bus.sqlite3") as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    # Prefetch, as in production: a message the SDK cannot decode used to take the prefetched ones down with it.
    settings = listener_settings(approval_not_found_window_seconds=60.0, prefetch_count=20)
    async with Harness(bus, dts_backend.settings, listener_settings=settings) as harness:
        yield harness


def raw_send(bus: LocalBus, message: proton.Message) -> None:
    with RawClient(bus) as client:
        client.authorize(QUEUE)
        sender = client.conn.create_sender(QUEUE)
        delivery = client.send(sender, message)
        assert delivery.remote_state == proton.Delivery.ACCEPTED, delivery.remote_state


def reasons(dead: list[Any]) -> list[str | None]:
    return [text(m.dead_letter_reason) for m in dead]


async def test_a_char_property_neither_stalls_the_listener_nor_loses_the_message(h: Harness, bus: LocalBus) -> None:
    """Service Bus maps .NET char to AMQP char; the SDK had no decoder for it and shut the receiver down."""
    odd = f"odd-{uuid.uuid4().hex}"
    raw_send(bus, proton.Message(id=odd, subject="start", content_type="application/json",
                                 body=json.dumps({"orchestration": "hello_cities"}).encode(),
                                 properties={"grade": proton.char("A"), "amount": proton.decimal128(b"\x00" * 16)}))
    normal = [await h.start("hello_cities") for _ in range(5)]
    for instance_id in [odd, *normal]:
        assert await h.wait_for_output(instance_id) == "Hello Tokyo!, Hello Seattle!, Hello London!"
    await h.queue_drained()
    assert await h.peek_queue(ServiceBusSubQueue.DEAD_LETTER) == []


async def test_dlq_shows_resubmits_and_ends_while_the_listener_dead_letters_again(h: Harness, bus: LocalBus
                                                                                   ) -> None:
    """`dlq` failed on a char property; `dlq resubmit --all` never ended on permanently invalid messages."""
    raw_send(bus, proton.Message(id=f"bad-{uuid.uuid4().hex}", subject="nope", body=b"{}",
                                 properties={"grade": proton.char("B")}))
    for _ in range(4):
        await h.send({"orchestration": "hello_cities"}, subject="nope")
    await h.dead_letters(5)
    env = sbworker_env(bus.connection_string, "Endpoint=http://localhost:1;Authentication=None")
    shown = sbworker("dlq", "--json", "--peek", "50", env=env)
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)) == 5
    # The listener is running: every copy sent back is dead-lettered again under a new sequence number.
    done = sbworker("dlq", "resubmit", "--all", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "resubmitted 5 message(s)" in done.stdout, done.stdout


async def test_a_forged_first_attempt_cannot_make_an_approval_wait_forever(bus: LocalBus, dts_backend: DtsBackend
                                                                           ) -> None:
    """A publisher's year-9999 first attempt kept an approval re-enqueued for ever (and across restarts)."""
    settings = listener_settings(approval_not_found_window_seconds=3.0)
    async with Harness(bus, dts_backend.settings, listener_settings=settings) as short_window:
        await short_window.approve(f"missing-{uuid.uuid4().hex}", application_properties={
            PROP_FIRST_ATTEMPT: "9999-12-31T00:00:00+00:00", PROP_RETRIES: 0})
        [dead] = await short_window.dead_letters(1, timeout=30)
        assert text(dead.dead_letter_reason) == "InstanceNotFound"


async def test_an_approval_for_another_workflow_is_dead_lettered_with_a_reason(h: Harness) -> None:
    iid = await h.start("workflow_with_retry", {"fail_times": 3, "retry": {"first_retry_seconds": 60}})
    await h.wait_for_state(iid, lambda s: s.runtime_status.name == "RUNNING")
    await h.approve(iid)
    [dead] = await h.dead_letters(1)
    assert text(dead.dead_letter_reason) == "NotAnApprovalWorkflow"
    assert "workflow_with_retry" in (text(dead.dead_letter_error_description) or "")


async def test_an_id_too_long_to_re_enqueue_is_dead_lettered_at_once(h: Harness, bus: LocalBus) -> None:
    """The SDKs cap message ids at 128: such an approval used to cycle through lock expiry instead."""
    long_id = "a" * 200
    raw_send(bus, proton.Message(id=long_id, subject="approval", content_type="application/json",
                                 body=json.dumps({"instance_id": f"nobody-{uuid.uuid4().hex}", "approved": True,
                                                  "approver": "mallory"}).encode()))
    [dead] = await h.dead_letters(1, timeout=20)  # the window is 60 s: this is not the window closing
    assert text(dead.dead_letter_reason) == "MessageIdTooLong"


async def test_huge_subjects_and_ids_do_not_make_huge_log_lines(h: Harness, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    caplog.set_level(logging.INFO)
    await h.send({"orchestration": "hello_cities"}, subject="s" * 200_000, message_id="m" * 120)
    [dead] = await h.dead_letters(1)
    assert text(dead.dead_letter_reason) == "UnknownSubject"
    # The broker moves the message before it answers; the listener logs the settlement once it reads that answer.
    await eventually(lambda: any(r.getMessage().startswith("settled ") for r in caplog.records),
                     what="the settlement's log line")
    assert max(len(r.getMessage()) for r in caplog.records) < 2_000
