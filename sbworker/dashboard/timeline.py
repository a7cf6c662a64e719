"""History → Gantt bars: a pure function, so the timeline is tested without a server or a browser.

DTS keeps no spans, only the history. A bar is read off pairs of events: `TaskScheduled` → `TaskCompleted` /
`TaskFailed` (same task id), `TimerCreated` → `TimerFired`, `SubOrchestrationInstanceCreated` → its completion,
and for a wait, the moment the orchestration went idle → the `EventRaised` that woke it. The SDK retries an
activity under the *same* task id, so pairs are matched in order (first scheduled, first answered): every attempt
becomes its own bar, numbered, and the timer between two attempts is labelled as the retry delay.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from durabletask import history as h

from sbworker.core.times import span_text, utc_text

if TYPE_CHECKING:
    from sbworker.observability.recent_spans import SpanRecord

# What a bar is, for styling and for the legend.
ORCHESTRATION = "orchestration"
ACTIVITY = "activity"
TIMER = "timer"
SUB_ORCHESTRATION = "suborchestration"
WAIT = "wait"

# How a bar ended (or that it has not).
COMPLETED = "completed"
FAILED = "failed"
RUNNING = "running"
CANCELLED = "cancelled"  # the orchestration finished first (e.g. the approval timer after a decision)


@dataclass(frozen=True)
class Bar:
    kind: str
    label: str
    start: datetime
    end: datetime  # for an open bar: `now` (or when the orchestration ended)
    outcome: str
    attempt: int | None = None  # 1, 2, … for an activity or sub-orchestration that was retried
    detail: str = ""  # a line for the tooltip: a failure message, when a timer was due


@dataclass(frozen=True)
class Timeline:
    bars: list[Bar] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max((self.end - self.start).total_seconds(), 0.001)


_FINISHED = (h.ExecutionCompletedEvent, h.ExecutionTerminatedEvent)


def build(events: Sequence[h.HistoryEvent], *, now: datetime, running: bool,
          awaiting: Iterable[str] = ()) -> Timeline:
    """Bars for one execution's history, in the order their work began.

    `now` closes the bars still open while the orchestration runs. `awaiting` names events the orchestration is
    known to wait for (e.g. `ApprovalEvent` while an approval is pending): the history cannot say that an
    orchestration waits for an event that has not come, so the caller, who knows the workflow, tells us.
    """
    if not events:
        return Timeline()
    start = events[0].timestamp
    finished = next((e.timestamp for e in events if isinstance(e, _FINISHED)), None)
    end_of_run = finished if finished is not None else (now if running else events[-1].timestamp)
    # (start, position in the history of the event that began it, bar): work begun together keeps history order.
    bars: list[tuple[datetime, int, Bar]] = []

    def add(bar: Bar, position: int) -> None:
        bars.append((bar.start, position, bar))

    open_tasks: dict[int, deque[tuple[h.TaskScheduledEvent | h.SubOrchestrationInstanceCreatedEvent, int, int]]] = \
        defaultdict(deque)
    attempts: dict[int, int] = defaultdict(int)
    failed_awaiting_retry: dict[int, str] = {}  # task id → name, between a failure and the next attempt
    open_timers: dict[int, tuple[h.TimerCreatedEvent, str, int]] = {}
    idle_since: datetime | None = None

    for position, event in enumerate(events):
        if isinstance(event, h.OrchestratorCompletedEvent):
            idle_since = event.timestamp
        elif isinstance(event, h.TaskScheduledEvent | h.SubOrchestrationInstanceCreatedEvent):
            attempts[event.event_id] += 1
            failed_awaiting_retry.pop(event.event_id, None)
            open_tasks[event.event_id].append((event, attempts[event.event_id], position))
        elif isinstance(event, h.TaskCompletedEvent | h.TaskFailedEvent | h.SubOrchestrationInstanceCompletedEvent
                        | h.SubOrchestrationInstanceFailedEvent):
            queue = open_tasks.get(event.task_scheduled_id)
            if not queue:
                continue  # an answer without its schedule (a truncated history): nothing to draw
            scheduled, attempt, begun = queue.popleft()
            failed = isinstance(event, h.TaskFailedEvent | h.SubOrchestrationInstanceFailedEvent)
            detail = ""
            failure = getattr(event, "failure_details", None)
            if failure is not None:
                detail = f"{failure.error_type}: {failure.message}"
            if failed:
                failed_awaiting_retry[event.task_scheduled_id] = scheduled.name
            add(_task_bar(scheduled, attempt, event.timestamp, FAILED if failed else COMPLETED, detail), begun)
        elif isinstance(event, h.TimerCreatedEvent):
            retry_of = next(reversed(failed_awaiting_retry.values()), None) if failed_awaiting_retry else None
            open_timers[event.event_id] = (event, f"retry delay: {retry_of}" if retry_of else "timer", position)
        elif isinstance(event, h.TimerFiredEvent):
            timer = open_timers.pop(event.timer_id, None)
            if timer is not None:
                add(Bar(TIMER, timer[1], timer[0].timestamp, event.timestamp, COMPLETED,
                        detail=f"due {_iso(timer[0].fire_at)}"), timer[2])
        elif isinstance(event, h.EventRaisedEvent):
            begin = idle_since if idle_since is not None and idle_since <= event.timestamp else event.timestamp
            add(Bar(WAIT, f"event: {event.name}", begin, event.timestamp, COMPLETED), position)

    open_outcome = RUNNING if finished is None and running else CANCELLED
    for queue in open_tasks.values():
        for scheduled, attempt, begun in queue:
            add(_task_bar(scheduled, attempt, end_of_run, open_outcome, ""), begun)
    for created, label, begun in open_timers.values():
        add(Bar(TIMER, label, created.timestamp, max(end_of_run, created.timestamp), open_outcome,
                detail=f"due {_iso(created.fire_at)}"), begun)
    if finished is None and running:
        for name in awaiting:
            begin = idle_since or start
            add(Bar(WAIT, f"waiting for event: {name}", begin, max(end_of_run, begin), RUNNING), len(events))

    _number_single_attempts(bars)
    ordered = [bar for _, _, bar in sorted(bars, key=lambda item: (item[0], item[1]))]
    started = next((e for e in events if isinstance(e, h.ExecutionStartedEvent)), None)
    whole = Bar(ORCHESTRATION, started.name if started else "orchestration", start, max(end_of_run, start),
                _run_outcome(events, finished, running))
    last = max([whole.end, *(bar.end for bar in ordered)])
    return Timeline(bars=[whole, *ordered], start=start, end=last)


def _task_bar(scheduled: h.TaskScheduledEvent | h.SubOrchestrationInstanceCreatedEvent, attempt: int,
              end: datetime, outcome: str, detail: str) -> Bar:
    kind = ACTIVITY if isinstance(scheduled, h.TaskScheduledEvent) else SUB_ORCHESTRATION
    label = scheduled.name if kind == ACTIVITY else f"{scheduled.name} ({scheduled.instance_id})"  # type: ignore[union-attr]
    return Bar(kind, label, scheduled.timestamp, max(end, scheduled.timestamp), outcome, attempt, detail)


def _number_single_attempts(bars: list[tuple[datetime, int, Bar]]) -> None:
    """Only retried work shows attempt numbers: a task run once is just its name."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for _, _, bar in bars:
        if bar.attempt is not None:
            counts[(bar.kind, bar.label)] = max(counts[(bar.kind, bar.label)], bar.attempt)
    for index, (begin, order, bar) in enumerate(bars):
        if bar.attempt is not None and counts[(bar.kind, bar.label)] == 1:
            bars[index] = (begin, order, Bar(bar.kind, bar.label, bar.start, bar.end, bar.outcome, None, bar.detail))


def _run_outcome(events: Sequence[h.HistoryEvent], finished: datetime | None, running: bool) -> str:
    for event in events:
        if isinstance(event, h.ExecutionTerminatedEvent):
            return FAILED
        if isinstance(event, h.ExecutionCompletedEvent):
            return FAILED if event.failure_details is not None else COMPLETED
    return RUNNING if running else COMPLETED


def _iso(moment: datetime) -> str:
    return utc_text(moment)


def ticks(timeline: Timeline, count: int = 6) -> list[tuple[float, str]]:
    """Axis labels as (fraction of the width, offset from the start), at round steps."""
    total = timeline.seconds
    if total <= 0:
        return []
    steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
             1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800]
    step = next((s for s in steps if total / s <= count), steps[-1])
    marks: list[tuple[float, str]] = []
    value = 0.0
    while value <= total + 1e-9:
        marks.append((value / total, span_text(value)))
        value += step
    return marks


def from_spans(spans: Sequence[SpanRecord]) -> Timeline:
    """One trace as bars, parents before children (depth-first, siblings by start), indented by depth."""
    if not spans:
        return Timeline()
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRecord]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None  # a parent in another process is a root here
        children.setdefault(parent, []).append(span)
    bars: list[Bar] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            bars.append(Bar(kind=_span_kind(span), label=f"{'· ' * depth}{span.name}",
                            start=_at(span.start_ns), end=_at(span.end_ns),
                            outcome=FAILED if span.error else COMPLETED,
                            detail=", ".join(f"{k}={v}" for k, v in sorted(span.attributes.items()))))
            visit(span.span_id, depth + 1)

    visit(None, 0)
    return Timeline(bars=bars, start=min(b.start for b in bars), end=max(b.end for b in bars))


def _span_kind(span: SpanRecord) -> str:
    """A bar colour from the span's role: the messaging hops, DTS calls, the orchestration, its activities."""
    if span.name.startswith("orchestration:"):
        return "orchestration"
    if span.name.startswith("activity:"):
        return "activity"
    if span.kind in ("consumer", "producer") and not span.name.startswith(("create_orchestration", "orchestration_")):
        return "wait"
    if span.name.startswith("timer"):
        return "timer"
    return "suborchestration"


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)
