"""`/entities`: durable entities with their state and last change, one page of the query API at a time."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from aiohttp import web
from durabletask.client import EntityQuery

from sbworker.core.errors import one_line
from sbworker.dashboard import instances
from sbworker.dashboard.views import dts, render
from sbworker.patches import dts_query

log = logging.getLogger(__name__)

PAGE = 50
MAX_STATE_CHARS = 2000


async def entities_page(request: web.Request) -> web.Response:
    prefix = request.query.get("prefix", "").strip()[:256]
    after = request.query.get("after", "")[:1024] or None
    context: dict[str, Any] = {"prefix": prefix, "after": after, "rows": [], "next": None, "error": None,
                               "unsupported": False}
    query = EntityQuery(instance_id_starts_with=_entity_prefix(prefix), include_state=True, include_transient=True,
                        page_size=PAGE)
    try:
        got = await dts_query.entity_page_async(dts(request), query, after)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return render(request, "entities.html", **{**context, "unsupported": True})
        log.warning("listing entities failed: %s", one_line(error, 500))
        return render(request, "entities.html", status=502, **{**context, "error": f"DTS did not answer: "
                                                                                   f"{one_line(error, 500)}"})
    rows = [{"id": str(e.id), "name": e.id.entity, "key": e.id.key, "last_modified": e.last_modified,
             "backlog": e.backlog_queue_size, "locked_by": e.get_locked_by() or "",
             "state": instances.pretty(e.get_state())[:MAX_STATE_CHARS] if e.includes_state else ""}
            for e in got.entities]
    return render(request, "entities.html", **{**context, "rows": rows, "next": got.next_token})


def _entity_prefix(typed: str) -> str | None:
    """Entity ids are `@name@key`: a typed name (or `name@key…`) is matched from its start."""
    if not typed:
        return None
    return typed if typed.startswith("@") else f"@{typed}"
