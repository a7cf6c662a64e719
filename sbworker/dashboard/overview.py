"""The overview page's figures: instances per status and name, starts and completions per minute, the queue's depth
and dead-letter count over time. Read from the backends, bounded, never every instance.

- **Counts** come from one query-API page per status (up to `COUNT_PAGE` instances each, without payloads, all six
  at once): exact below that, shown as "1000+" above it. The table of names by status counts the same instances.
- **Over time**, a `Sampler` of this process asks every `SAMPLE_SECONDS`: the instances created since its last
  sample (the query API's creation-time filter), the instances that ended since then (`ListInstanceIds` by
  completion time, ids only), and the queue's counts. Each is bounded per sample (`WINDOW_LIMIT`). It keeps the
  last `HISTORY_MINUTES` minutes, and on its first sample fills the hour before from the creation and last-update
  times of the instances created in it (an instance that started before that hour and ended within it is missed
  there, and only there). The sampler starts with the first page anyone opens, and stops with the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationQuery, OrchestrationState, OrchestrationStatus

from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.errors import one_line
from sbworker.patches import dts_query

log = logging.getLogger(__name__)

COUNT_PAGE = 300
SAMPLE_SECONDS = 15.0
HISTORY_MINUTES = 60
WINDOW_PAGE = 1000
WINDOW_LIMIT = 10_000  # instances counted per sample and kind; more is shown as a lower bound
STATUSES = tuple(OrchestrationStatus)


@dataclass(frozen=True)
class Counts:
    """Instances per status (and per name and status), as far as one page per status reaches."""

    by_status: dict[str, int]
    capped: frozenset[str]  # statuses with more than COUNT_PAGE instances: their count is a lower bound
    by_name: dict[str, dict[str, int]]  # name → status → count

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


async def counts(dts: AsyncTaskHubGrpcClient, since: datetime | None = None) -> Counts:
    """One page per status, all at once; `since` limits them to instances created from then on."""
    pages = await asyncio.gather(*(dts_query.page_async(dts, OrchestrationQuery(
        created_time_from=since, runtime_status=[status], max_instance_count=COUNT_PAGE,
        fetch_inputs_and_outputs=False)) for status in STATUSES))
    by_status: dict[str, int] = {}
    capped: set[str] = set()
    by_name: dict[str, Counter[str]] = {}
    for status, got in zip(STATUSES, pages, strict=True):
        by_status[status.name] = len(got.states)
        if got.next_token is not None or not got.complete:
            capped.add(status.name)
        for state in got.states:
            by_name.setdefault(state.name or "?", Counter())[status.name] += 1
    return Counts(by_status=by_status, capped=frozenset(capped),
                  by_name={name: dict(c) for name, c in sorted(by_name.items())})


@dataclass
class Minute:
    """What the sampler saw in one minute (UTC)."""

    starts: int = 0
    completions: int = 0
    starts_capped: bool = False
    completions_capped: bool = False
    active: int | None = None  # the queue's last count in this minute
    dead_letter: int | None = None


@dataclass
class History:
    """Minute → figures, newest last, at most HISTORY_MINUTES + 1 of them."""

    minutes: OrderedDict[datetime, Minute] = field(default_factory=OrderedDict)

    def at(self, moment: datetime) -> Minute:
        key = moment.astimezone(UTC).replace(second=0, microsecond=0)
        if key not in self.minutes:
            self.minutes[key] = Minute()
            self.minutes = OrderedDict(sorted(self.minutes.items()))
            while len(self.minutes) > HISTORY_MINUTES + 1:
                self.minutes.popitem(last=False)
        return self.minutes[key]

    def window(self, now: datetime) -> list[tuple[datetime, Minute]]:
        """The last HISTORY_MINUTES minutes up to `now`'s, every one present (empty ones as zeros)."""
        last = now.astimezone(UTC).replace(second=0, microsecond=0)
        keys = [last - timedelta(minutes=n) for n in range(HISTORY_MINUTES - 1, -1, -1)]
        return [(k, self.minutes.get(k, Minute())) for k in keys]


QueueCounts = Callable[[], Awaitable[tuple[int, int]]]  # (active, dead-lettered)


class Sampler:
    """Samples on the dashboard's loop; `start` is idempotent, `stop` ends the task."""

    def __init__(self, dts: Callable[[], AsyncTaskHubGrpcClient], queue_counts: QueueCounts,
                 interval: float = SAMPLE_SECONDS) -> None:
        self.history = History()
        self.errors: list[str] = []  # the last problem per kind, shown on the page
        self._dts = dts
        self._queue_counts = queue_counts
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._last: datetime | None = None
        self.first_sample = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.sample(datetime.now(UTC))
            self.first_sample.set()
            await asyncio.sleep(self._interval)

    async def sample(self, now: datetime) -> None:
        """One sample: the instances since the last one (the hour before, the first time) and the queue."""
        errors: list[str] = []
        since = self._last or (now - timedelta(minutes=HISTORY_MINUTES))
        first = self._last is None
        try:
            created = await _walk(self._dts(), OrchestrationQuery(created_time_from=since, created_time_to=now,
                                                                   max_instance_count=WINDOW_PAGE,
                                                                   fetch_inputs_and_outputs=False))
            self._count_starts(created, first)
            if not first:
                ended, capped = await _ended(self._dts(), since, now)
                minute = self.history.at(now)
                minute.completions += ended
                minute.completions_capped |= capped
            self._last = now
        except Exception as error:
            errors.append(f"DTS: {one_line(error, 300)}")
        try:
            active, dead = await self._queue_counts()
            minute = self.history.at(now)
            minute.active, minute.dead_letter = active, dead
        except Exception as error:
            errors.append(f"Service Bus: {one_line(error, 300)}")
        self.errors = errors

    def _count_starts(self, created: tuple[list[OrchestrationState], bool], first: bool) -> None:
        states, capped = created
        for state in states:
            minute = self.history.at(_aware(state.created_at))
            minute.starts += 1
            minute.starts_capped |= capped
            if first and state.runtime_status in TERMINAL_STATUSES:
                # The hour before the first sample: an ended instance's last update is when it ended.
                self.history.at(_aware(state.last_updated_at)).completions += 1


async def _walk(dts: AsyncTaskHubGrpcClient, query: OrchestrationQuery) -> tuple[list[OrchestrationState], bool]:
    """Pages of the query until WINDOW_LIMIT; True when it stopped there."""
    states: list[OrchestrationState] = []
    token: str | None = None
    while True:
        got = await dts_query.page_async(dts, query, token)
        states += got.states
        if got.next_token is None:
            return states, not got.complete
        if len(states) >= WINDOW_LIMIT:
            return states, True
        token = got.next_token


async def _ended(dts: AsyncTaskHubGrpcClient, since: datetime, until: datetime) -> tuple[int, bool]:
    """How many instances ended in [since, until): ids only, by completion time."""
    count, token = 0, None
    while True:
        page = await dts.list_instance_ids(completed_time_from=since, completed_time_to=until,
                                           page_size=WINDOW_PAGE, continuation_token=token)
        count += len(page.items)
        if not page.continuation_token or not page.items:
            return count, False
        if count >= WINDOW_LIMIT:
            return count, True
        token = page.continuation_token


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- charts: plain numbers for an SVG the template draws ---------------------------------------------------------

@dataclass(frozen=True)
class Chart:
    """Bars or lines over the last hour, in a viewBox WIDTH wide and HEIGHT high, with a rounded top value."""

    series: list[tuple[str, list[tuple[float, float, int | None]]]]  # name → (x, y, value) per minute
    top: int
    ticks: list[tuple[float, str]]  # (x, HH:MM)
    bar_width: float
    empty: bool


WIDTH, HEIGHT, LEFT, BOTTOM = 600.0, 140.0, 36.0, 18.0


def chart(minutes: list[tuple[datetime, Minute]], fields: Iterable[str]) -> Chart:
    names = list(fields)
    values = {name: [getattr(m, name) for _, m in minutes] for name in names}
    highest = max([v for vs in values.values() for v in vs if v is not None] or [0])
    top = _round_up(highest)
    step = (WIDTH - LEFT) / max(len(minutes), 1)
    plot = HEIGHT - BOTTOM
    series = []
    for name in names:
        points = [(LEFT + i * step, plot - (v or 0) / top * (plot - 4), v) for i, v in enumerate(values[name])]
        series.append((name, points))
    ticks = [(LEFT + i * step, moment.strftime("%H:%M")) for i, (moment, _) in enumerate(minutes) if i % 10 == 0]
    return Chart(series=series, top=top, ticks=ticks, bar_width=max(step / (len(names) + 0.5), 1.0),
                 empty=highest == 0)


def _round_up(value: float) -> int:
    """1, 2, 5, 10, 20, 50… at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return int(factor * magnitude)
    return int(10 * magnitude)
