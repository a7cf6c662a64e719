"""The aiohttp application: routes, templates, its Backend (the clients it talks through) and what it closes.

`create_app` builds everything from `Settings` alone, as the service does, so the dashboard sees exactly the
task hub and queue that the configuration points at (embedded stack, emulators, or Azure with `DefaultAzure`).
The SDK clients are made on the first request, on the loop that serves it: grpc.aio and the asyncio Service Bus
client belong to the loop that creates them.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from sbworker.core.config import Settings
from sbworker.dashboard import pages, security, traces
from sbworker.dashboard.access import Access
from sbworker.dashboard.backend import BACKEND, Backend
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

# aiohttp's limits for a page nobody should send much to: 8 KiB lines and fields, 64 headers, 1 MiB bodies.
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings, *, access: Access | None = None, trace_link: traces.TraceLink = traces.no_traces,
               spans: traces.SpanSource | None = None, taskhubs: Sequence[str] = ()) -> web.Application:
    """The dashboard for the task hub and queue in `settings`.

    `access` says who may come in and change things (sbworker/dashboard/access.py; default: loopback, no
    credentials). `trace_link` turns an instance into a link to its trace (see sbworker/dashboard/traces.py); with
    `spans` (the process's own, in memory) the dashboard draws the trace itself at `/trace`. `taskhubs` names
    task hubs to offer besides the service's own (`sbworker dashboard --taskhub`).
    """
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
