"""Reading instances from DTS for the pages: the filtered, paged list and one instance with its history.

DTS's query API filters by status, creation time and id prefix, and returns oldest first. The DTS dashboard
shows newest first and also filters by name and free text, so every instance that passes the server-side
filters is read (in pages of `QUERY_PAGE`, without inputs and outputs), then filtered, sorted and cut into pages
here. With very many instances, narrow the list by status or creation time first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from durabletask import history as h
from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus
from multidict import MultiMapping

from sbworker.core.codes import TAG_MESSAGE_ID
from sbworker.core.times import utc_text
from sbworker.operations.monitor import parse_json

STATUSES: tuple[str, ...] = tuple(s.name for s in OrchestrationStatus)
PAGE_SIZES = (10, 25, 50, 100)
REFRESH_CHOICES = (0, 2, 5, 10, 30)  # seconds; 0 = off
QUERY_PAGE = 500  # instances per QueryInstances call


class FilterError(ValueError):
    """A filter value that cannot be understood; the page shows it instead of a result."""


@dataclass(frozen=True)
class Filters:
    """Everything the list shows, from (and back to) the query string: every view has a URL to share."""

    statuses: tuple[str, ...] = ()
    name: str = ""
    prefix: str = ""
    search: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None
    page: int = 1
    size: int = 25
    refresh: int = 0

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> Filters:
        """From `request.query` (a MultiDict: `status` may repeat). Unknown values are refused, not guessed."""
        statuses = tuple(dict.fromkeys(s.upper() for s in query.getall("status", []) if s))
        for status in statuses:
            if status not in STATUSES:
                raise FilterError(f"unknown status {status!r}")
        return cls(
            statuses=statuses,
            name=query.get("name", "").strip(),
            prefix=query.get("prefix", "").strip(),
            search=query.get("q", "").strip(),
            created_from=_moment(query.get("from", ""), "from"),
            created_to=_moment(query.get("to", ""), "to"),
            page=_choice_int(query.get("page", "1"), "page", low=1),
            size=_choice_int(query.get("size", "25"), "size", allowed=PAGE_SIZES),
            refresh=_choice_int(query.get("refresh", "0"), "refresh", allowed=REFRESH_CHOICES),
        )

    def query_string(self, **changes: Any) -> str:
        """This view's query string, with some values changed (another page, no refresh…)."""
        values: dict[str, Any] = {
            "status": list(self.statuses), "name": self.name, "prefix": self.prefix, "q": self.search,
            "from": _local(self.created_from), "to": _local(self.created_to), "page": self.page,
            "size": self.size, "refresh": self.refresh,
        }
        values.update(changes)
        defaults = {"page": 1, "size": 25, "refresh": 0}
        pairs: list[tuple[str, Any]] = []
        for key, value in values.items():
            if value in ("", None, []) or defaults.get(key) == value:
                continue
            pairs.extend((key, v) for v in value) if isinstance(value, list) else pairs.append((key, value))
        return urlencode(pairs)

    def dts_query(self) -> OrchestrationQuery:
        return OrchestrationQuery(
            created_time_from=self.created_from,
            created_time_to=self.created_to,
            runtime_status=[OrchestrationStatus[s] for s in self.statuses] or None,
            max_instance_count=QUERY_PAGE,
            fetch_inputs_and_outputs=False,
            instance_id_prefix=self.prefix or None,
        )

    def matches(self, state: OrchestrationState) -> bool:
        """The filters DTS cannot apply: exact name, and a case-insensitive search in id, name and custom status."""
        if self.name and state.name != self.name:
            return False
        if self.search:
            needle = self.search.lower()
            haystack = (state.instance_id, state.name or "", state.serialized_custom_status or "")
            if not any(needle in text.lower() for text in haystack):
                return False
        return True


@dataclass(frozen=True)
class Listing:
    rows: list[OrchestrationState]
    total: int  # matching instances, across all pages
    pages: int


def page_of(states: Sequence[OrchestrationState], filters: Filters) -> Listing:
    """Filter, sort newest first, cut out the requested page."""
    matching = sorted((s for s in states if filters.matches(s)), key=lambda s: _aware(s.created_at), reverse=True)
    pages = max(1, -(-len(matching) // filters.size))
    begin = (min(filters.page, pages) - 1) * filters.size
    return Listing(rows=list(matching[begin:begin + filters.size]), total=len(matching), pages=pages)


@dataclass(frozen=True)
class HistoryItem:
    """One history event for the feed: when, what, a one-line summary and its fields as JSON."""

    event_id: int
    timestamp: datetime
    kind: str
    summary: str
    payload: str


@dataclass(frozen=True)
class Origins:
    """Which Service Bus messages acted on an instance, read from its history."""

    started_by: str | None = None  # the start message's id (tag on ExecutionStarted)
    events: list[tuple[str, str, datetime]] = field(default_factory=list)  # (event name, message id, raised at)
    trace_parent: str | None = None  # W3C traceparent of the start, when the caller sent one

    @property
    def message_ids(self) -> list[str]:
        return ([self.started_by] if self.started_by else []) + [mid for _, mid, _ in self.events]


def history_items(events: Sequence[h.HistoryEvent]) -> list[HistoryItem]:
    items = []
    for event in events:
        fields = {k: v for k, v in event.to_dict().items() if k not in ("event_id", "timestamp") and v is not None}
        items.append(HistoryItem(event_id=event.event_id, timestamp=event.timestamp,
                                 kind=type(event).__name__.removesuffix("Event"), summary=_summary(event),
                                 payload=pretty(json.dumps(_decoded(fields), default=str)) if fields else ""))
    return items


def origins(events: Sequence[h.HistoryEvent]) -> Origins:
    started_by = None
    trace_parent = None
    raised: list[tuple[str, str, datetime]] = []
    for event in events:
        if isinstance(event, h.ExecutionStartedEvent):
            started_by = (event.tags or {}).get(TAG_MESSAGE_ID) or started_by
            if event.parent_trace_context is not None and event.parent_trace_context.trace_parent:
                trace_parent = event.parent_trace_context.trace_parent
        elif isinstance(event, h.EventRaisedEvent):
            data = parse_json(event.input)
            if isinstance(data, dict) and isinstance(data.get("message_id"), str):
                raised.append((event.name, data["message_id"], event.timestamp))
    return Origins(started_by=started_by, events=raised, trace_parent=trace_parent)


def _summary(event: h.HistoryEvent) -> str:
    if isinstance(event, h.ExecutionStartedEvent):
        return f"started {event.name}"
    if isinstance(event, h.TaskScheduledEvent):
        return f"scheduled activity {event.name} (task {event.event_id})"
    if isinstance(event, h.TaskCompletedEvent):
        return f"task {event.task_scheduled_id} completed"
    if isinstance(event, h.TaskFailedEvent):
        message = event.failure_details.message if event.failure_details else ""
        return f"task {event.task_scheduled_id} failed: {message}"
    if isinstance(event, h.TimerCreatedEvent):
        return f"timer {event.event_id} due {utc_text(event.fire_at)}"
    if isinstance(event, h.TimerFiredEvent):
        return f"timer {event.timer_id} fired"
    if isinstance(event, h.EventRaisedEvent):
        return f"event {event.name} received"
    if isinstance(event, h.EventSentEvent):
        return f"event {event.name} sent to {event.instance_id}"
    if isinstance(event, h.SubOrchestrationInstanceCreatedEvent):
        return f"started sub-orchestration {event.name} ({event.instance_id})"
    if isinstance(event, h.ExecutionCompletedEvent):
        status = OrchestrationStatus(event.orchestration_status).name if event.orchestration_status in \
            {s.value for s in OrchestrationStatus} else str(event.orchestration_status)
        return f"execution {status.lower()}"
    if isinstance(event, h.ExecutionTerminatedEvent):
        return "terminated"
    if isinstance(event, h.ExecutionSuspendedEvent):
        return "suspended"
    if isinstance(event, h.ExecutionResumedEvent):
        return "resumed"
    return ""


def _decoded(fields: dict[str, Any]) -> dict[str, Any]:
    """Payload fields hold JSON text: show them as JSON values, not as strings full of escapes."""
    return {k: parse_json(v) if k in ("input", "result", "output") and isinstance(v, str) else v
            for k, v in fields.items()}


def pretty(raw: str | None) -> str:
    """Indented JSON for a payload, or the text as it is when it is not JSON. The template escapes it."""
    if raw is None or raw == "":
        return ""
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def form_time(raw: str) -> datetime | None:
    """A form's ISO-8601 time (None when blank): `YYYY-MM-DDTHH:MM` (what a datetime-local field sends) is UTC, as
    the pages say; a value with a zone keeps it. Raises ValueError for anything else."""
    raw = raw.strip()
    if not raw:
        return None
    moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _moment(raw: str, name: str) -> datetime | None:
    try:
        moment = form_time(raw)
    except ValueError:
        raise FilterError(f"{name}: not a date and time: {raw.strip()!r}") from None
    return moment.astimezone(UTC) if moment else None


def _local(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""


def _choice_int(raw: str, name: str, *, low: int = 0, allowed: Sequence[int] = ()) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(f"{name}: expected a number, got {raw!r}") from None
    if (allowed and value not in allowed) or value < low:
        raise FilterError(f"{name}: {value} is not allowed")
    return value
