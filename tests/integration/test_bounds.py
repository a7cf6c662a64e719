"""The message contract's bounds through a real queue (issue 23): each one dead-letters with its reason and a
description naming the limit and the size, and the issue's retry message within the bounds runs to its end with
its large input in the history once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from localbus import LocalBus
from sbworker.core.limits import Limits
from sbworker.core.messages import text
from tests.fixtures.dts import DtsBackend
from tests.fixtures.localbus import queue_bus
from tests.integration.harness import QUEUE, Harness, listener_settings

pytestmark = pytest.mark.usefixtures("dts_worker")

# The issue's message: ~160 KB on the wire, 480 KB of input once the SDK has JSON-escaped every "é".
PAD = "\u00e9" * 80_000


@pytest.fixture
def bus(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalBus]:
    with queue_bus(request.config, {QUEUE: {"LockDuration": "PT30S", "MaxDeliveryCount": 10}},
                   data_path=tmp_path / "bus.sqlite3") as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    # Service Bus Standard's 256 KiB body; event data lowered so an approval can exceed it.
    async with Harness(bus, dts_backend.settings, listener_settings=listener_settings(max_message_bytes=262_144),
                       limits=Limits(max_event_bytes=1024)) as harness:
        yield harness


async def send_start(h: Harness, body: dict[str, Any]) -> str:
    return await h.send(None, subject="start", raw=json.dumps(body, ensure_ascii=False).encode("utf-8"))


CASES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("InstanceIdTooLong", "start", {"orchestration": "hello_cities", "instance_id": "i" * 101},
     ["101 characters", "limit is 100 characters"]),
    ("InputTooLarge", "start", {"orchestration": "hello_cities", "input": "\u00e9" * 100_000},
     ["600,002 bytes", "limit is 524,288 bytes (MAX_INPUT_BYTES)"]),
    ("InputOutOfBounds", "start",
     {"orchestration": "workflow_with_retry",
      "input": {"pad": PAD, "always_fail": True, "retry": {"max_attempts": 100, "first_retry_seconds": 0}}},
     ["max_attempts: 100 is out of bounds; the limit is 1 to 10 attempts", "first_retry_seconds: 0"]),
    ("EventTooLarge", "approval", {"instance_id": "x", "approved": True, "approver": "a", "comment": "c" * 2000},
     ["the data of event ApprovalEvent is 2,1", "limit is 1,024 bytes (MAX_EVENT_BYTES)"]),
    ("EventTooLarge", "event", {"instance_id": "x", "name": "PaymentReceived", "data": {
        "amount_cents": 1, "currency": "EUR", "reference": "r" * 128, "payer": "\u00e9" * 256}},
     ["the data of event PaymentReceived is 1,", "limit is 1,024 bytes (MAX_EVENT_BYTES)"]),
]


@pytest.mark.parametrize(("expected", "subject", "body", "named"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
async def test_a_message_over_a_bound_is_dead_lettered_naming_the_limit_and_the_size(
        h: Harness, expected: str, subject: str, body: dict[str, Any], named: list[str]) -> None:
    mid = await h.send(None, subject=subject, raw=json.dumps(body, ensure_ascii=False).encode("utf-8"))
    [dead] = await h.dead_letters(1)
    assert dead.message_id == mid
    assert text(dead.dead_letter_reason) == expected
    description = text(dead.dead_letter_error_description) or ""
    for fragment in named:
        assert fragment in description, description
    await h.queue_drained()
    assert await h.state(mid) is None  # nothing reached DTS


async def test_the_issue_s_message_within_the_bounds_runs_to_its_end_with_its_input_in_the_history_once(
        h: Harness) -> None:
    body = {"orchestration": "workflow_with_retry",
            "input": {"pad": PAD, "always_fail": True, "retry": {"max_attempts": 4, "first_retry_seconds": 1,
                                                                 "backoff": 1}}}
    assert len(json.dumps(body, ensure_ascii=False).encode()) > 160_000
    mid = await send_start(h, body)
    assert await h.wait_for_output(mid, timeout=60) == "Compensated"
    assert h.dts is not None
    history = await h.dts.get_orchestration_history(mid)
    sizes = {type(e).__name__: 0 for e in history}
    for event in history:
        sizes[type(event).__name__] += len(getattr(event, "input", None) or "")
    assert sizes["ExecutionStartedEvent"] > 480_000  # the input, once
    assert sizes["TaskScheduledEvent"] < 1_000  # four attempts and the compensation: a few bytes each
