"""What the views share, one per application: the settings, a DTS client per task hub, the queues, the overview's
samplers and the trail of pages walked. Its own module so that the application (which builds it) and the views
(which read it from the request) both import it, and neither imports the other."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

from sbworker.core import clients
from sbworker.core.config import Settings
from sbworker.dashboard import overview, traces
from sbworker.dashboard.queue import Queue

TRAIL_SIZE = 10_000


class Backend:
    """The clients and settings the views share: one per application."""

    def __init__(self, settings: Settings, trace_link: traces.TraceLink, spans: traces.SpanSource | None = None,
                 taskhubs: Sequence[str] = ()) -> None:
        self.settings = settings
        self.started = datetime.now(UTC)  # this process keeps the spans it saw since then
        # The service's task hub first (the queue feeds it), then any other the dashboard was told to show.
        self.hubs = list(dict.fromkeys([settings.dts.taskhub, *taskhubs]))
        self._hub_clients: dict[str, AsyncDurableTaskSchedulerClient] = {}
        self._samplers: dict[str, overview.Sampler] = {}
        self.trace_link = trace_link
        self.spans = spans
        # The queue, or the subscription and then the retry queue: `queue` is the first, where messages arrive.
        self.queues = [Queue(settings.servicebus, entity) for entity in settings.servicebus.source.receive_from]
        self.queue = self.queues[0]
        # (list, cursor of a page) → cursor of the page before it: the query API only goes forward, so "newer"
        # links come from the way each visitor walked. Bounded; a link older than that leads to the first page.
        self._trail: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def dts(self) -> AsyncDurableTaskSchedulerClient:
        """The client of the service's task hub."""
        return self.dts_for(self.hubs[0])

    def dts_for(self, hub: str) -> AsyncDurableTaskSchedulerClient:
        if hub not in self._hub_clients:
            self._hub_clients[hub] = clients.dts_async_client(dataclasses.replace(self.settings.dts, taskhub=hub))
        return self._hub_clients[hub]

    def sampler(self, hub: str) -> overview.Sampler:
        """The overview's sampler of one task hub (the queue's figures are the same in each)."""
        if hub not in self._samplers:
            self._samplers[hub] = overview.Sampler(lambda: self.dts_for(hub), self._queue_depth)
        return self._samplers[hub]

    def remember(self, key: str, page: str, previous: str) -> None:
        self._trail[(key, page)] = previous
        self._trail.move_to_end((key, page))
        while len(self._trail) > TRAIL_SIZE:
            self._trail.popitem(last=False)

    def previous(self, key: str, page: str) -> str | None:
        """The cursor of the page before `page` ("" for the first), or None when unknown."""
        return self._trail.get((key, page))

    async def _queue_depth(self) -> tuple[int, int]:
        counted = await self.queue.counts()
        return counted.active, counted.dead_letter

    async def close(self) -> None:
        for sampler in self._samplers.values():
            await sampler.stop()
        for queue in self.queues:
            await queue.close()
        hub_clients, self._hub_clients = list(self._hub_clients.values()), {}
        for client in hub_clients:
            with contextlib.suppress(Exception):
                await client.close()


BACKEND = web.AppKey("backend", Backend)
