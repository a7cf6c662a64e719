"""The pure parts: history → bars, the filters' round trip through a URL, and the trace id hook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from durabletask import history as h
from durabletask import task
from multidict import MultiDict

from sbworker.dashboard import timeline, traces
from sbworker.dashboard.instances import FilterError, Filters

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(name: str = "wf") -> list[h.HistoryEvent]:
    return [h.OrchestratorStartedEvent(-1, at(0)), h.ExecutionStartedEvent(-1, at(0), name=name)]


def idle(seconds: float) -> h.HistoryEvent:
    return h.OrchestratorCompletedEvent(-1, at(seconds))


def failure(message: str) -> task.FailureDetails:
    return task.FailureDetails(message, "ServiceError", None)


def shape(line: timeline.Timeline) -> list[tuple[str, str, str, int | None, float, float]]:
    return [(b.kind, b.label, b.outcome, b.attempt, (b.start - T0).total_seconds(), (b.end - T0).total_seconds())
            for b in line.bars]


def test_a_retried_activity_is_one_bar_per_attempt_with_the_delays_between() -> None:
    events = [*started(), h.TaskScheduledEvent(1, at(1), name="pay"), idle(1),
              h.TaskFailedEvent(-1, at(2), task_scheduled_id=1, failure_details=failure("down")),
              h.TimerCreatedEvent(2, at(2), fire_at=at(7)), idle(2),
              h.TimerFiredEvent(-1, at(7), fire_at=at(7), timer_id=2),
              h.TaskScheduledEvent(1, at(7), name="pay"), idle(7),  # the SDK reuses the task id for a retry
              h.TaskCompletedEvent(-1, at(9), task_scheduled_id=1, result='"ok"'), idle(9),
              h.ExecutionCompletedEvent(-1, at(9), orchestration_status=1, result='"ok"')]
    line = timeline.build(events, now=at(100), running=False)
    assert shape(line) == [
        ("orchestration", "wf", "completed", None, 0, 9),
        ("activity", "pay", "failed", 1, 1, 2),
        ("timer", "retry delay: pay", "completed", None, 2, 7),
        ("activity", "pay", "completed", 2, 7, 9),
    ]
    assert line.bars[1].detail == "ServiceError: down"
    assert line.seconds == 9


def test_parallel_activities_pair_by_task_id_and_a_single_attempt_has_no_number() -> None:
    events = [*started(), h.TaskScheduledEvent(1, at(1), name="a"), h.TaskScheduledEvent(2, at(1), name="b"), idle(1),
              h.TaskCompletedEvent(-1, at(3), task_scheduled_id=2),
              h.TaskCompletedEvent(-1, at(4), task_scheduled_id=1),
              h.ExecutionCompletedEvent(-1, at(4), orchestration_status=1)]
    assert shape(timeline.build(events, now=at(100), running=False))[1:] == [
        ("activity", "a", "completed", None, 1, 4), ("activity", "b", "completed", None, 1, 3)]


def test_a_wait_runs_from_going_idle_to_the_event_and_an_unfired_timer_is_cancelled() -> None:
    events = [*started("approval"), h.TaskScheduledEvent(1, at(1), name="ask"), idle(1),
              h.TaskCompletedEvent(-1, at(2), task_scheduled_id=1), h.TimerCreatedEvent(2, at(2), fire_at=at(3600)),
              idle(2.5), h.OrchestratorStartedEvent(-1, at(30)),
              h.EventRaisedEvent(-1, at(30), name="ApprovalEvent", input='{"approved": true}'), idle(30),
              h.ExecutionCompletedEvent(-1, at(30), orchestration_status=1)]
    assert shape(timeline.build(events, now=at(100), running=False))[1:] == [
        ("activity", "ask", "completed", None, 1, 2),
        ("timer", "timer", "cancelled", None, 2, 30),
        ("wait", "event: ApprovalEvent", "completed", None, 2.5, 30),
    ]


def test_while_running_open_work_reaches_now_and_a_known_wait_is_drawn() -> None:
    events = [*started("approval"), h.TaskScheduledEvent(1, at(1), name="ask"), idle(1),
              h.TaskCompletedEvent(-1, at(2), task_scheduled_id=1), h.TimerCreatedEvent(2, at(2), fire_at=at(3600)),
              h.SubOrchestrationInstanceCreatedEvent(3, at(2), instance_id="child", name="sub"), idle(2)]
    line = timeline.build(events, now=at(50), running=True, awaiting=["ApprovalEvent"])
    assert shape(line) == [
        ("orchestration", "approval", "running", None, 0, 50),
        ("activity", "ask", "completed", None, 1, 2),
        ("timer", "timer", "running", None, 2, 50),
        ("suborchestration", "sub (child)", "running", None, 2, 50),
        ("wait", "waiting for event: ApprovalEvent", "running", None, 2, 50),
    ]


def test_failed_and_terminated_runs_and_an_empty_history() -> None:
    failed = [*started(), h.ExecutionCompletedEvent(-1, at(1), orchestration_status=3, failure_details=failure("x"))]
    assert timeline.build(failed, now=at(9), running=False).bars[0].outcome == "failed"
    ended = [*started(), h.ExecutionTerminatedEvent(-1, at(2), input='"stop"')]
    assert shape(timeline.build(ended, now=at(9), running=False)) == [("orchestration", "wf", "failed", None, 0, 2)]
    assert timeline.build([], now=at(0), running=True).bars == []


def test_ticks_fall_on_round_steps() -> None:
    line = timeline.Timeline(bars=[], start=T0, end=at(9))
    assert [label for _, label in timeline.ticks(line)] == ["0 s", "2 s", "4 s", "6 s", "8 s"]
    assert timeline.ticks(timeline.Timeline()) == []


def test_filters_survive_the_round_trip_through_the_url() -> None:
    query = MultiDict([("status", "running"), ("status", "FAILED"), ("name", "hello_cities"), ("prefix", "ord"),
                       ("q", "ada"), ("from", "2026-11-29T10:00"), ("to", "2026-11-29T12:30+01:00"), ("page", "2"),
                       ("size", "50"), ("refresh", "5")])
    filters = Filters.parse(query)
    assert filters.statuses == ("RUNNING", "FAILED")
    assert filters.created_to == datetime(2026, 11, 29, 11, 30, tzinfo=UTC)
    again = Filters.parse(MultiDict(parse_qsl(filters.query_string())))
    assert again == filters
    assert Filters().query_string() == ""
    for bad in ({"status": "asleep"}, {"size": "7"}, {"page": "0"}, {"from": "yesterday"}, {"refresh": "1"}):
        with pytest.raises(FilterError):
            Filters.parse(MultiDict(bad))


def test_trace_ids_are_read_from_a_w3c_traceparent_only() -> None:
    assert traces.trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == \
        "4bf92f3577b34da6a3ce929d0e0e4736"
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-xyz-00f067aa0ba902b7-01"):
        assert traces.trace_id(bad) is None
    assert traces.no_traces("i", "4bf92f3577b34da6a3ce929d0e0e4736") is None
