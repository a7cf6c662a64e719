"""Reading instances from DTS for the pages: one page of the filtered list, and one instance with its history.

The list never reads every instance. DTS's query API filters by status, creation time and id prefix and answers
one page at a time with a continuation token (sbworker/patches/dts_query.py); a page of the list is one such
request. The filters DTS cannot apply (name, free-text search) are applied here to pages of `SCAN_PAGE`
instances, and one page of the list reads at most `SCAN_LIMIT` of them: past that it shows what it found and lets
you go on from where it stopped. Rows come in the backend's order (localdts: newest first; DTS documents none).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from durabletask import history as h
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationQuery, OrchestrationState, OrchestrationStatus
from multidict import MultiMapping

from sbworker.core.cloudevents import TAG_PREFIX
from sbworker.core.codes import TAG_MESSAGE_ID
from sbworker.core.times import utc_text
from sbworker.operations.monitor import parse_json
from sbworker.patches import dts_query

STATUSES: tuple[str, ...] = tuple(s.name for s in OrchestrationStatus)
PAGE_SIZES = (10, 25, 50, 100)
REFRESH_CHOICES = (0, 2, 5, 10, 30)  # seconds; 0 = off
SCAN_PAGE = 500  # instances per QueryInstances call when filtering by name or text here
SCAN_LIMIT = 1000  # instances one page of the list reads at most when filtering here


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
    page: int = 1  # shown only: where the list is, counted from the first page
    size: int = 25
    refresh: int = 0
    after: str = ""  # the cursor of this page (see Cursor); "" for the first

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
            after=Cursor.check(query.get("after", "")),
        )

    def query_string(self, **changes: Any) -> str:
        """This view's query string, with some values changed (another page, no refresh…)."""
        values: dict[str, Any] = {
            "status": list(self.statuses), "name": self.name, "prefix": self.prefix, "q": self.search,
            "from": _local(self.created_from), "to": _local(self.created_to), "page": self.page,
            "size": self.size, "refresh": self.refresh, "after": self.after,
        }
        values.update(changes)
        defaults = {"page": 1, "size": 25, "refresh": 0}
        pairs: list[tuple[str, Any]] = []
        for key, value in values.items():
            if value in ("", None, []) or defaults.get(key) == value:
                continue
            pairs.extend((key, v) for v in value) if isinstance(value, list) else pairs.append((key, value))
        return urlencode(pairs)

    @property
    def scans(self) -> bool:
        """Does this view filter by something DTS cannot (so pages are read and filtered here)?"""
        return bool(self.name or self.search)

    def key(self) -> str:
        """What identifies the list regardless of where in it we are (for remembering the way back)."""
        return self.query_string(page=1, after="", refresh=0)

    def dts_query(self, page_size: int) -> OrchestrationQuery:
        return OrchestrationQuery(
            created_time_from=self.created_from,
            created_time_to=self.created_to,
            runtime_status=[OrchestrationStatus[s] for s in self.statuses] or None,
            max_instance_count=page_size,
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
class Cursor:
    """Where a page of the list begins: the query API's continuation token (None: the first page) and how many
    instances of the page it names were already shown (when a page of the list ended inside one)."""

    token: str | None = None
    skip: int = 0

    def encode(self) -> str:
        return f"{self.skip}~{self.token}" if self.token or self.skip else ""

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        skip, sep, token = raw.partition("~")
        if not raw:
            return cls()
        if not sep or not skip.isdigit():
            raise FilterError("this page's link is not one the dashboard made: start again from the newest")
        return cls(token or None, int(skip))

    @classmethod
    def check(cls, raw: str) -> str:
        if len(raw) > 1024:
            raise FilterError("this page's link is too long: start again from the newest")
        cls.decode(raw)
        return raw


@dataclass(frozen=True)
class Listing:
    rows: list[OrchestrationState]
    next: Cursor | None  # where the next (older) page begins; None: this is the last one
    scanned: int  # instances read for this page
    capped: bool  # SCAN_LIMIT reached before the page was full


async def read_page(dts: AsyncTaskHubGrpcClient, filters: Filters) -> Listing:
    """One page of the list: one query, or (name and text filters) pages of SCAN_PAGE up to SCAN_LIMIT."""
    cursor = Cursor.decode(filters.after)
    if not filters.scans:
        got = await dts_query.page_async(dts, filters.dts_query(filters.size), cursor.token)
        following = Cursor(got.next_token) if got.next_token else None
        return Listing(rows=_newest_first(got.states[cursor.skip:]), next=following, scanned=len(got.states),
                       capped=False)
    rows: list[OrchestrationState] = []
    token, skip, scanned = cursor.token, cursor.skip, 0
    while True:
        got = await dts_query.page_async(dts, filters.dts_query(SCAN_PAGE), token)
        for at in range(skip, len(got.states)):
            scanned += 1
            if not filters.matches(got.states[at]):
                continue
            rows.append(got.states[at])
            if len(rows) == filters.size:
                rest = Cursor(token, at + 1) if at + 1 < len(got.states) else \
                    (Cursor(got.next_token) if got.next_token else None)
                return Listing(rows=_newest_first(rows), next=rest, scanned=scanned, capped=False)
        skip = 0
        if got.next_token is None:
            return Listing(rows=_newest_first(rows), next=None, scanned=scanned, capped=False)
        token = got.next_token
        if scanned >= SCAN_LIMIT:
            return Listing(rows=_newest_first(rows), next=Cursor(token), scanned=scanned, capped=True)


def _newest_first(states: list[OrchestrationState]) -> list[OrchestrationState]:
    return sorted(states, key=lambda s: _aware(s.created_at), reverse=True)


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
    cloudevent: dict[str, str] = field(default_factory=dict)  # the start's CloudEvents attributes (source, time…)

    @property
    def message_ids(self) -> list[str]:
        return ([self.started_by] if self.started_by else []) + [mid for _, mid, _ in self.events]


@dataclass(frozen=True)
class Family:
    """The orchestration that started this one as a sub-orchestration, and those this one started."""

    parent: tuple[str, str] | None = None  # (instance id, name)
    children: list[tuple[str, str]] = field(default_factory=list)  # (instance id, name), in the order started


def family(events: Sequence[h.HistoryEvent]) -> Family:
    parent = None
    children: dict[str, str] = {}
    for event in events:
        if isinstance(event, h.ExecutionStartedEvent) and event.parent_instance is not None:
            info = event.parent_instance
            if info.orchestration_instance is not None and info.orchestration_instance.instance_id:
                parent = (info.orchestration_instance.instance_id, info.name or "")
        elif isinstance(event, h.SubOrchestrationInstanceCreatedEvent) and event.instance_id:
            children.setdefault(event.instance_id, event.name or "")
    return Family(parent=parent, children=list(children.items()))


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
    cloudevent: dict[str, str] = {}
    raised: list[tuple[str, str, datetime]] = []
    for event in events:
        if isinstance(event, h.ExecutionStartedEvent):
            started_by = (event.tags or {}).get(TAG_MESSAGE_ID) or started_by
            cloudevent = {key.removeprefix(TAG_PREFIX): value for key, value in (event.tags or {}).items()
                          if key.startswith(TAG_PREFIX)} or cloudevent
            if event.parent_trace_context is not None and event.parent_trace_context.trace_parent:
                trace_parent = event.parent_trace_context.trace_parent
        elif isinstance(event, h.EventRaisedEvent):
            data = parse_json(event.input)
            if isinstance(data, dict) and isinstance(data.get("message_id"), str):
                raised.append((event.name, data["message_id"], event.timestamp))
    return Origins(started_by=started_by, events=raised, trace_parent=trace_parent, cloudevent=cloudevent)


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
