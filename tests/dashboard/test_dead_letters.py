"""Resubmitting or deleting chosen dead letters touches those only: every other dead letter keeps its delivery
count and is not left locked (Service Bus receives a dead-letter queue only from its head: the ones ahead are
handed back with AMQP `released`, which is not a delivery). Each action writes one audit line."""

from __future__ import annotations

import json
import logging

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusSubQueue

from sbworker.operations import dlq
from tests.dashboard.conftest import Stack, Web, confirmed, send_raw
from tests.support.wait import until


def counts(sb: ServiceBusClient, queue: str) -> dict[int, tuple[str, int]]:
    """sequence number → (message id, delivery count) of every dead letter, peeked."""
    with sb.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        return {int(m.sequence_number or 0): (str(m.message_id), int(m.delivery_count or 0))
                for m in receiver.peek_messages(max_message_count=1000, sequence_number=1)}


def dead_lettered(sb: ServiceBusClient, queue: str, run_id: str, n: int) -> list[int]:
    """`n` messages the listener dead-letters (a start whose body is not JSON), by sequence number."""
    ids = [send_raw(sb, queue, "not json at all", "start", message_id=f"{run_id}-{k}") for k in range(n)]

    def all_there() -> list[int] | None:
        by_id = {mid: seq for seq, (mid, _) in counts(sb, queue).items()}
        return [by_id[i] for i in ids] if all(i in by_id for i in ids) else None

    found: list[int] = until(all_there, what=f"{n} dead letters")
    return found


def test_resubmit_and_delete_one_leave_every_other_dead_letter_as_it_was(
        stack: Stack, sb: ServiceBusClient, web: Web, run_id: str, caplog: pytest.LogCaptureFixture) -> None:
    queue = stack.settings.servicebus.source.entity.name
    first, middle, last = dead_lettered(sb, queue, run_id, 3)
    before = counts(sb, queue)
    with caplog.at_level(logging.INFO, logger="sbworker.dashboard.audit"):
        _, page = confirmed(web, "/queue/dead-letters/resubmit", {"seq": str(middle)}, token_from="/queue")
        assert page.notice() == f"Resubmitted 1 message(s) to 'workflow-requests': #{middle}."
        after = counts(sb, queue)
        assert middle not in after
        assert {s: before[s] for s in before if s != middle} == {s: after[s] for s in before if s != middle}
        # Deleting the first and then the last at once: neither is left locked by the other's receive.
        for seq in (first, last):
            _, page = confirmed(web, "/queue/dead-letters/delete", {"seq": str(seq)}, token_from="/queue")
            assert page.notice() == f"Deleted 1 dead-lettered message(s): #{seq}."
    final = counts(sb, queue)
    assert first not in final and last not in final
    assert {s: before[s] for s in before if s not in (first, middle, last)} == \
        {s: final[s] for s in before if s not in (first, middle, last)}
    lines = [json.loads(r.getMessage().removeprefix("audit ")) for r in caplog.records
             if r.name == "sbworker.dashboard.audit"]
    assert [(x["action"], x["messages"], x["result"], x["entity"]) for x in lines] == [
        ("dead letters resubmit", [middle], "ok", queue), ("dead letters delete", [first], "ok", queue),
        ("dead letters delete", [last], "ok", queue)]


def test_the_command_line_resubmit_is_as_careful(stack: Stack, sb: ServiceBusClient, run_id: str) -> None:
    queue = stack.settings.servicebus.source.entity.name
    _, chosen, _ = dead_lettered(sb, queue, run_id, 3)
    before = counts(sb, queue)
    result = dlq.resubmit(sb, stack.settings.servicebus.source, stack.settings.servicebus.source.entity, {chosen})
    assert result.done == [chosen] and result.missing == []
    after = counts(sb, queue)
    assert {s: before[s] for s in before if s != chosen} == {s: after[s] for s in before if s != chosen}
    assert dlq.resubmit(sb, stack.settings.servicebus.source, stack.settings.servicebus.source.entity,
                        {chosen}).missing == [chosen]
