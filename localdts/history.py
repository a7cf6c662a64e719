"""What a history tells after a restart: which activities, timers and sub-orchestrations are still owed.

Nothing about in-flight work is stored separately: a ``TaskScheduled`` with no ``TaskCompleted``/``TaskFailed``
in the history or the pending events is an activity to run again, a ``TimerCreated`` with no ``TimerFired`` is a
timer to arm again. The history is the one record, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import durabletask.internal.orchestrator_service_pb2 as pb


def stamp(events: Iterable[pb.HistoryEvent]) -> None:
    """Give every event still carrying the zero timestamp (1970-01-01) the current time."""
    first = None
    for event in events:
        ts = event.timestamp
        if ts.seconds == 0 and ts.nanos == 0:
            if first is None:
                ts.GetCurrentTime()
                first = ts
            else:
                ts.CopyFrom(first)


def extends(events: Sequence[pb.HistoryEvent], length: int, last: pb.HistoryEvent | None) -> bool:
    """Whether ``events`` still begins with the ``length`` events seen earlier (``last`` being the final one):
    events were only appended since, so work done for that prefix (writing, sizing) need not be redone."""
    return length <= len(events) and (length == 0 or events[length - 1] is last)


def encode(events: Sequence[pb.HistoryEvent]) -> bytes:
    return pb.HistoryChunk(events=events).SerializeToString()


def decode(blob: bytes) -> list[pb.HistoryEvent]:
    return list(pb.HistoryChunk.FromString(blob).events)


@dataclass(frozen=True)
class OwedTimer:
    timer_id: int
    fire_at: datetime


def open_tasks(history: Sequence[pb.HistoryEvent],
               pending: Sequence[pb.HistoryEvent]) -> dict[int, pb.HistoryEvent]:
    """``TaskScheduled`` events still waiting for their answer, by task id.

    Read in order: a retry schedules the task again under the same id after its failure, so a task is open
    when its latest scheduling has no answer after it.
    """
    waiting: dict[int, pb.HistoryEvent] = {}
    for e in (*history, *pending):
        if e.HasField("taskScheduled"):
            waiting[e.eventId] = e
        elif e.HasField("taskCompleted"):
            waiting.pop(e.taskCompleted.taskScheduledId, None)
        elif e.HasField("taskFailed"):
            waiting.pop(e.taskFailed.taskScheduledId, None)
    return waiting


def owed_activities(history: Sequence[pb.HistoryEvent],
                    pending: Sequence[pb.HistoryEvent]) -> list[pb.HistoryEvent]:
    """``TaskScheduled`` events whose activity has not answered yet, oldest first."""
    return sorted(open_tasks(history, pending).values(), key=lambda e: e.eventId)


def is_task_answered(history: Sequence[pb.HistoryEvent], pending: Sequence[pb.HistoryEvent],
                     task_id: int) -> bool:
    """True unless the task is scheduled and waiting: an answer to anything else would be a second one."""
    return task_id not in open_tasks(history, pending)


def owed_timers(history: Sequence[pb.HistoryEvent], pending: Sequence[pb.HistoryEvent]) -> list[OwedTimer]:
    fired = {e.timerFired.timerId for e in (*history, *pending) if e.HasField("timerFired")}
    return [OwedTimer(e.eventId, e.timerCreated.fireAt.ToDatetime(tzinfo=UTC))
            for e in history if e.HasField("timerCreated") and e.eventId not in fired]


def owed_sub_orchestrations(history: Sequence[pb.HistoryEvent],
                            pending: Sequence[pb.HistoryEvent]) -> list[tuple[int, str]]:
    """(task id, sub-instance id) of sub-orchestrations whose result has not reached the parent yet."""
    waiting: dict[int, str] = {}
    for e in (*history, *pending):
        if e.HasField("subOrchestrationInstanceCreated"):
            waiting[e.eventId] = e.subOrchestrationInstanceCreated.instanceId
        elif e.HasField("subOrchestrationInstanceCompleted"):
            waiting.pop(e.subOrchestrationInstanceCompleted.taskScheduledId, None)
        elif e.HasField("subOrchestrationInstanceFailed"):
            waiting.pop(e.subOrchestrationInstanceFailed.taskScheduledId, None)
    return sorted(waiting.items())


def find_scheduled(history: Sequence[pb.HistoryEvent], task_id: int) -> pb.HistoryEvent | None:
    """The ``TaskScheduled`` event of ``task_id`` (searching from the end, where new tasks are)."""
    for e in reversed(history):
        if e.eventId == task_id and e.HasField("taskScheduled"):
            return e
    return None


def execution_started(events: Iterable[pb.HistoryEvent]) -> pb.HistoryEvent | None:
    for e in events:
        if e.HasField("executionStarted"):
            return e
    return None
