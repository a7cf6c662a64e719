"""The query API's filters and continuation tokens, once for SQL (durable mode) and once for memory (``--memory``).

``QueryInstances`` lists newest first (creation time, then instance id, both descending); DTS documents no
order, and newest first is what a console shows, so a first page of 25 is the 25 newest. Its continuation token
is where the page ended (creation time and id), so the next page starts exactly after it: every instance that
matches and exists for the whole walk is seen exactly once, whatever is created meanwhile. ``ListInstanceIds``
lists ended instances oldest completion first, with the same kind of token. A page holds at most
``MAX_PAGE_SIZE`` instances; a request for more (or for 0, "all") gets that many and a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb

TERMINAL_STATUSES = (pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED,
                     pb.ORCHESTRATION_STATUS_TERMINATED)
RUNNING_STATUSES = tuple(s for s in pb.OrchestrationStatus.values() if s not in TERMINAL_STATUSES)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class BadToken(ValueError):
    """A continuation token this backend did not hand out."""


def _us(ts: Any) -> int:
    """A protobuf Timestamp in microseconds since the epoch, as the store keeps times."""
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def encode_token(moment_us: int, instance_id: str) -> str:
    return f"{moment_us}:{instance_id}"


def decode_token(token: str) -> tuple[int, str]:
    moment, sep, instance_id = token.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(moment), instance_id
    except ValueError:
        raise BadToken(f"not a continuation token of this backend: {token[:60]!r}") from None


def _page_size(asked: int) -> int:
    return DEFAULT_PAGE_SIZE if asked <= 0 else min(asked, MAX_PAGE_SIZE)


def _ended(requested: Any) -> tuple[int, ...]:
    """The asked statuses that are ended ones; all ended ones when none is asked."""
    return tuple(sorted(set(requested) & set(TERMINAL_STATUSES))) if requested else TERMINAL_STATUSES


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high)


class _Where:
    """An SQL condition built term by term, with its parameters."""

    def __init__(self) -> None:
        self.terms: list[str] = ["1"]
        self.params: list[Any] = []

    def add(self, term: str, *params: Any) -> None:
        self.terms.append(term)
        self.params.extend(params)

    def range(self, column: str, low: int | None, high: int | None) -> None:
        if low is not None:
            self.add(f"{column} >= ?", low)
        if high is not None:
            self.add(f"{column} < ?", high)

    def statuses(self, statuses: tuple[int, ...]) -> None:
        self.add(f"status IN ({','.join('?' * len(statuses)) or 'NULL'})", *statuses)

    def sql(self) -> tuple[str, list[Any]]:
        return " AND ".join(self.terms), self.params


def _prefix_end(prefix: str) -> str:
    """The smallest string after every string that starts with ``prefix`` (for a range on the id)."""
    return prefix + "\U0010ffff"


@dataclass(frozen=True)
class InstanceQuery:
    statuses: tuple[int, ...]
    created_from_us: int | None  # inclusive
    created_to_us: int | None  # exclusive
    prefix: str | None
    page_size: int
    after: tuple[int, str] | None  # (created_us, instance_id) of the last instance of the previous page
    with_payloads: bool

    @classmethod
    def from_request(cls, q: pb.InstanceQuery) -> InstanceQuery:
        """Raises :class:`BadToken` for a token this backend did not hand out."""
        token = q.continuationToken.value if q.HasField("continuationToken") else ""
        return cls(
            statuses=tuple(sorted(set(q.runtimeStatus))),
            created_from_us=_us(q.createdTimeFrom) if q.HasField("createdTimeFrom") else None,
            created_to_us=_us(q.createdTimeTo) if q.HasField("createdTimeTo") else None,
            prefix=q.instanceIdPrefix.value if q.HasField("instanceIdPrefix") and q.instanceIdPrefix.value else None,
            page_size=_page_size(q.maxInstanceCount),
            after=decode_token(token) if token else None,
            with_payloads=q.fetchInputsAndOutputs,
        )

    def matches(self, status: int, created_us: int, instance_id: str) -> bool:
        """Python's reading of :meth:`sql_conditions` (and of the status filter), for memory mode."""
        return ((not self.statuses or status in self.statuses)
                and _within(created_us, self.created_from_us, self.created_to_us)
                and (self.prefix is None or instance_id.startswith(self.prefix))
                and (self.after is None or (created_us, instance_id) < self.after))

    def sql_conditions(self) -> tuple[str, list[Any]]:
        """The filters except the status (the store runs one query per status), as SQL and parameters."""
        where = _Where()
        where.range("created_us", self.created_from_us, self.created_to_us)
        if self.prefix is not None:
            where.add("instance_id >= ? AND instance_id < ?", self.prefix, _prefix_end(self.prefix))
        if self.after is not None:
            where.add("(created_us, instance_id) < (?, ?)", *self.after)
        return where.sql()


@dataclass(frozen=True)
class CompletedQuery:
    """``ListInstanceIds``: ended instances by completion time, ascending."""

    statuses: tuple[int, ...]
    completed_from_us: int | None  # inclusive
    completed_to_us: int | None  # exclusive
    page_size: int
    after: tuple[int, str] | None

    @classmethod
    def from_request(cls, r: pb.ListInstanceIdsRequest) -> CompletedQuery:
        token = r.lastInstanceKey.value if r.HasField("lastInstanceKey") else ""
        return cls(
            statuses=_ended(r.runtimeStatus),
            completed_from_us=_us(r.completedTimeFrom) if r.HasField("completedTimeFrom") else None,
            completed_to_us=_us(r.completedTimeTo) if r.HasField("completedTimeTo") else None,
            page_size=_page_size(r.pageSize),
            after=decode_token(token) if token else None,
        )

    def matches(self, status: int, completed_us: int | None, instance_id: str) -> bool:
        return (completed_us is not None and status in self.statuses
                and _within(completed_us, self.completed_from_us, self.completed_to_us)
                and (self.after is None or (completed_us, instance_id) > self.after))

    def sql_conditions(self) -> tuple[str, list[Any]]:
        where = _Where()
        where.add("completed_us IS NOT NULL")
        where.statuses(self.statuses)
        where.range("completed_us", self.completed_from_us, self.completed_to_us)
        if self.after is not None:
            where.add("(completed_us, instance_id) > (?, ?)", *self.after)
        return where.sql()


@dataclass(frozen=True)
class PurgeFilter:
    """``PurgeInstances`` by filter: ended instances only, by status and creation time."""

    statuses: tuple[int, ...]
    created_from_us: int | None
    created_to_us: int | None

    @classmethod
    def from_request(cls, f: pb.PurgeInstanceFilter) -> PurgeFilter:
        return cls(_ended(f.runtimeStatus),
                   _us(f.createdTimeFrom) if f.HasField("createdTimeFrom") else None,
                   _us(f.createdTimeTo) if f.HasField("createdTimeTo") else None)

    def matches(self, status: int, created_us: int) -> bool:
        return status in self.statuses and _within(created_us, self.created_from_us, self.created_to_us)

    def sql_conditions(self) -> tuple[str, list[Any]]:
        where = _Where()
        where.statuses(self.statuses)
        where.range("created_us", self.created_from_us, self.created_to_us)
        return where.sql()
