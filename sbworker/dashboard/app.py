"""The aiohttp application: routes, templates, the clients it talks through, and what it closes on shutdown.

`create_app` builds everything from `Settings` alone, as the service does, so the dashboard sees exactly the
task hub and queue that the configuration points at (embedded stack, emulators, or Azure with `DefaultAzure`).
The SDK clients are made on the first request, on the loop that serves it: grpc.aio and the asyncio Service Bus
client belong to the loop that creates them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Sequence

from aiohttp import web
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

from sbworker.core import clients
from sbworker.core.config import Settings
from sbworker.dashboard import overview, pages, security, traces
from sbworker.dashboard.access import Access
from sbworker.dashboard.queue import Queue

log = logging.getLogger(__name__)

# aiohttp's limits for a page nobody should send much to: 8 KiB lines and fields, 64 headers, 1 MiB bodies.
MAX_BODY_BYTES = 1024 * 1024
TRAIL_SIZE = 10_000


class Backend:
    """The clients and settings the views share: one per application."""

    def __init__(self, settings: Settings, trace_link: traces.TraceLink, spans: traces.SpanSource | None = None,
                 taskhubs: Sequence[str] = ()) -> None:
        self.settings = settings
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


def create_app(settings: Settings, *, access: Access | None = None, trace_link: traces.TraceLink = traces.no_traces,
               spans: traces.SpanSource | None = None, taskhubs: Sequence[str] = ()) -> web.Application:
    """The dashboard for the task hub and queue in `settings`.

    `access` says who may come in and change things (sbworker/dashboard/access.py; default: loopback, no
    credentials). `trace_link` turns an instance into a link to its trace (see sbworker/dashboard/traces.py); with
    `spans` (the process's own, in memory) the dashboard draws the trace itself at `/trace`. `taskhubs` names
    task hubs to offer besides the service's own (`sbworker dashboard --taskhub`).
    """
    from sbworker.dashboard.views import (
        actions,
        choose_hub,
        entities_view,
        error_pages,
        instances,
        overview_view,
        queue_views,
        trace_view,
    )

    access = access or Access()
    app = web.Application(middlewares=[security.middleware(access), error_pages], client_max_size=MAX_BODY_BYTES)
    app[security.ACCESS] = access
    app[BACKEND] = Backend(settings, traces.local_traces if spans is not None and trace_link is traces.no_traces
                           else trace_link, spans, taskhubs)
    app[pages.TEMPLATES] = pages.environment()
    app.router.add_get("/", instances.home)
    app.router.add_get("/login", security.login_form, name="login")
    app.router.add_post("/login", security.login)
    app.router.add_post("/logout", security.logout)
    app.router.add_post("/hub", choose_hub)
    app.router.add_get("/overview", overview_view.overview_page, name="overview")
    app.router.add_get("/instances", instances.listing, name="instances")
    app.router.add_get("/instance", instances.detail, name="instance")
    app.router.add_get("/instance/{view:history|timeline|messages}", instances.detail)
    app.router.add_post("/instance/{action}", actions.instance_action)
    app.router.add_post("/instances/bulk/{action:terminate|purge|rewind|suspend|resume}", actions.bulk_action)
    app.router.add_get("/new", actions.new_form, name="new")
    app.router.add_post("/new", actions.new_start)
    app.router.add_get("/queue", queue_views.queue_page, name="queue")
    app.router.add_get("/entities", entities_view.entities_page, name="entities")
    app.router.add_get("/trace", trace_view.waterfall, name="trace")
    app.router.add_post("/queue/dead-letters/{action:resubmit|delete}", queue_views.dead_letter_action)
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static/", pages.PACKAGE / "static", name="static", append_version=True)
    app.on_cleanup.append(_close)
    return app


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _close(app: web.Application) -> None:
    await app[BACKEND].close()
