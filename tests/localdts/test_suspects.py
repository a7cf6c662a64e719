"""Which work item ended a stream: only a stream that ends holding one counts against it; the items of a stream
that ends holding several are offered again alone (localdts/suspects.py). Hand-driven streams over real
sockets, step by step, and the turn rule itself."""

from __future__ import annotations

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.client import OrchestrationStatus
from durabletask.testing.in_memory_backend import ActivityWorkItem

from localdts import LocalDts, limits
from localdts.suspects import Stream, Suspects, Turn, turn
from tests.localdts import support
from tests.localdts.support import RawWorker

LOSSES_TO_FAIL = limits.MAX_UNANSWERED_DELIVERIES


def _iid(item: pb.WorkItem) -> str:
    return item.orchestratorRequest.instanceId


def _never_answered(client: DurableTaskSchedulerClient, iid: str) -> None:
    state = support.wait_status(client, iid, OrchestrationStatus.FAILED)
    assert state.failure_details is not None and state.failure_details.error_type == limits.NEVER_ANSWERED
    assert f"offered {LOSSES_TO_FAIL} times in a row" in state.failure_details.message


def test_a_stream_ending_with_several_items_counts_against_none_and_each_comes_back_alone(
        dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    a, b, c = (client.schedule_new_orchestration("quick", input=n) for n in range(3))
    shared = RawWorker(dts.port)
    assert [_iid(shared.take()) for _ in range(3)] == [a, b, c]
    shared.go_away()  # which of the three ended it? Unknown: none is counted

    holders = {}
    for _ in range(3):
        holder = RawWorker(dts.port)
        item = holder.take()
        holders[_iid(item)] = (holder, item)
    assert sorted(holders) == sorted([a, b, c])  # one each
    # Each of those streams holds its suspect alone: new work goes to a fresh stream (were it given to a holder,
    # this take would wait for the stream's deadline and fail).
    d = client.schedule_new_orchestration("quick", input=3)
    other = RawWorker(dts.port)
    d_item = other.take()
    assert _iid(d_item) == d
    other.complete(d_item)

    for iid in (b, c):  # the innocent answer their solo offer
        holder, item = holders[iid]
        holder.complete(item)
    for iid in (b, c, d):
        support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
    for w in (shared, holders[b][0], holders[c][0], other):
        w.close()  # from here on, each stream is the only one (a free stream would take a)
    # a's solo stream ends: counted once. Four more solo losses fail it; had the shared stream's end been
    # counted as well, the last of these takes would find nothing.
    holders[a][0].close()
    for _ in range(LOSSES_TO_FAIL - 1):
        alone = RawWorker(dts.port)
        assert _iid(alone.take()) == a
        alone.close()
    _never_answered(client, a)


def test_a_stream_waiting_for_work_takes_a_suspect_as_soon_as_there_is_one(
        dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    """Through the filters: only ``shared`` takes p and q; only ``waiting`` takes z, and so is back waiting in the
    SDK's dispatch loop when p and q become suspects."""
    shared = RawWorker(dts.port, orchestrations=("quick",))
    p, q = (client.schedule_new_orchestration("quick", input=n) for n in range(2))
    assert sorted(_iid(shared.take()) for _ in range(2)) == sorted([p, q])
    waiting = RawWorker(dts.port, orchestrations=("quick", "zed"))
    z = client.schedule_new_orchestration("zed")
    z_item = waiting.take()
    assert _iid(z_item) == z
    waiting.complete(z_item)
    support.wait_status(client, z, OrchestrationStatus.COMPLETED)

    shared.go_away()
    first = waiting.take()
    assert _iid(first) in (p, q)
    waiting.complete(first)
    second = waiting.take()  # after the answer, the other one, alone too
    assert _iid(second) in (p, q) and _iid(second) != _iid(first)
    waiting.complete(second)
    for iid in (p, q):
        support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
    shared.close()
    waiting.close()


def test_an_activity_lost_with_others_comes_back_alone_and_fails_after_five_losses_alone(
        dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    e = client.schedule_new_orchestration("quick", input=0)
    shared = RawWorker(dts.port)
    shared.schedule(shared.take(), "echo", "0")
    f = client.schedule_new_orchestration("quick", input=1)
    held = [shared.take(), shared.take()]
    assert sorted(i.WhichOneof("request") for i in held) == ["activityRequest", "orchestratorRequest"]
    shared.go_away()

    alone = RawWorker(dts.port)
    f_item = alone.take()  # the lost orchestration first, alone
    assert _iid(f_item) == f
    alone.complete(f_item)
    support.wait_status(client, f, OrchestrationStatus.COMPLETED)
    shared.close()
    for _ in range(LOSSES_TO_FAIL):  # then the activity, alone each time; counted each time, not before
        activity = alone.take()
        assert activity.activityRequest.orchestrationInstance.instanceId == e
        alone.close()  # the only stream: the next one gets what it held
        alone = RawWorker(dts.port)
    episode = alone.take()  # the activity failed: its orchestration is told
    assert _iid(episode) == e
    failed = [ev.taskFailed for ev in episode.orchestratorRequest.newEvents if ev.HasField("taskFailed")]
    assert [t.failureDetails.errorType for t in failed] == [limits.NEVER_ANSWERED]
    alone.close()


def test_an_abandon_names_its_item_and_always_counts(dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    iid = client.schedule_new_orchestration("quick", input=0)
    worker = RawWorker(dts.port)
    for _ in range(LOSSES_TO_FAIL):
        item = worker.take()
        assert _iid(item) == iid
        worker.stub.AbandonTaskOrchestratorWorkItem(
            pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
    _never_answered(client, iid)
    worker.close()


# The turn rule, on its own.

def _held(counts: dict[int, int]) -> object:
    return lambda s: counts.get(s.number, 0)


def test_without_suspects_every_stream_takes_queued_work() -> None:
    s = Stream(1)
    assert turn(s, [s], lambda _: 3, lambda _: False) is Turn.QUEUED


def test_a_free_stream_takes_a_waiting_suspect_and_then_nothing_until_it_is_answered() -> None:
    s = Stream(1)
    held = {1: 0}
    assert turn(s, [s], lambda x: held[x.number], lambda _: True) is Turn.SUSPECT
    s.alone, held[1] = True, 1
    assert turn(s, [s], lambda x: held[x.number], lambda _: False) is Turn.WAIT
    held[1] = 0  # answered
    assert turn(s, [s], lambda x: held[x.number], lambda _: False) is Turn.QUEUED
    assert not s.alone


def test_a_busy_stream_empties_for_a_suspect_only_when_no_other_stream_can_take_it() -> None:
    busy, free = Stream(1), Stream(2)
    held = {1: 2, 2: 0}
    assert turn(busy, [busy, free], lambda x: held[x.number], lambda _: True) is Turn.QUEUED
    assert not busy.emptying
    free.closed = True
    assert turn(busy, [busy, free], lambda x: held[x.number], lambda _: True) is Turn.WAIT
    assert busy.emptying
    other = Stream(3)
    held[3] = 1  # busy too, but the first one already empties: this one goes on
    assert turn(other, [busy, other], lambda x: held[x.number], lambda _: True) is Turn.QUEUED
    held[1] = 0
    assert turn(busy, [busy, other], lambda x: held[x.number], lambda _: True) is Turn.SUSPECT
    assert not busy.emptying


def test_a_free_stream_whose_filters_refuse_the_suspect_does_not_count_as_taking_it() -> None:
    busy, picky = Stream(1), Stream(2)
    held = {1: 1, 2: 0}
    assert turn(busy, [busy, picky], lambda x: held[x.number], lambda x: x is busy) is Turn.WAIT


def test_suspects_keep_their_order_skip_what_a_stream_refuses_and_leave_with_their_instance() -> None:
    suspects = Suspects()
    activity = ActivityWorkItem(instance_id="x", name="echo", task_id=0, input=None, completion_token=1)
    for s in ("x", activity, "y", "x"):
        suspects.add(s)
    assert "x" in suspects and "y" in suspects
    assert suspects.take(lambda s: s != "x") is activity
    suspects.withdraw("x")
    assert "x" not in suspects
    assert suspects.take(lambda _: True) == "y"
    assert not suspects
