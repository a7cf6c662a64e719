"""The instance list and one instance (overview, history, timeline, messages): read-only pages."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import grpc
from aiohttp import web
from durabletask.client import OrchestrationState, OrchestrationStatus

from orchestrations import registry
from orchestrations.approval_workflow import APPROVAL_EVENT
from orchestrations.events import CATALOG
from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.errors import one_line
from sbworker.dashboard import instances, timeline, traces
from sbworker.dashboard.views import backend, dts, render

log = logging.getLogger(__name__)

DETAIL_VIEWS = ("overview", "history", "timeline", "messages")
DETAIL_REFRESH = 2  # seconds between reloads of a page whose instance is still going


async def home(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/instances")


async def listing(request: web.Request) -> web.Response:
    try:
        filters = instances.Filters.parse(request.query)
    except instances.FilterError as error:
        return render(request, "instances.html", status=400, filters=instances.Filters(), listing=None,
                      error=str(error), counts=None, counts_error=None, newer=None, **_choices())
    board = backend(request)
    page, counted = await asyncio.gather(instances.read_page(dts(request), filters), board.queue.counts(),
                                         return_exceptions=True)
    counts, counts_error = None, None
    if isinstance(counted, BaseException):
        log.warning("peeking the queue failed: %s", one_line(counted, 500))
        counts_error = f"Service Bus did not answer: {one_line(counted, 500)}"
    else:
        counts = counted
    if isinstance(page, BaseException):
        log.warning("listing instances failed: %s", one_line(page, 500))
        expired = isinstance(page, grpc.aio.AioRpcError) and page.code() == grpc.StatusCode.INVALID_ARGUMENT \
            and filters.after
        problem = ("This page's link has expired (the backend no longer knows where it was): start again from the "
                   "newest." if expired else f"DTS did not answer: {one_line(page, 500)}")
        return render(request, "instances.html", status=400 if expired else 502, filters=filters, listing=None,
                      error=problem, counts=counts, counts_error=counts_error, newer=None, **_choices())
    if page.next is not None:
        board.remember(filters.key(), page.next.encode(), filters.after)
    newer = board.previous(filters.key(), filters.after) if filters.after else None
    return render(request, "instances.html", filters=filters, listing=page, error=None, counts=counts,
                  counts_error=counts_error, newer=newer, **_choices())


def _choices() -> dict[str, Any]:
    return {"statuses": instances.STATUSES, "names": registry.orchestration_names(),
            "page_sizes": instances.PAGE_SIZES, "refresh_choices": instances.REFRESH_CHOICES}


async def detail(request: web.Request) -> web.Response:
    instance_id = request.query.get("id", "")
    view = request.match_info.get("view", "overview")
    if not instance_id:
        raise web.HTTPFound("/instances")
    board = backend(request)
    try:
        state, events = await asyncio.gather(dts(request).get_orchestration_state(instance_id),
                                             _history(dts(request), instance_id))
    except Exception as error:
        log.warning("reading instance %r failed: %s", instance_id[:128], one_line(error, 500))
        return render(request, "instance.html", status=502, instance_id=instance_id, view=view, state=None,
                      error=f"DTS did not answer: {one_line(error, 500)}", **_empty_detail())
    if state is None:
        # Not created yet (a start still in the queue, or scheduled) or purged: say what the queue holds for it.
        queued = await _queued(request, instance_id, [])
        return render(request, "instance.html", status=404, instance_id=instance_id, view="messages", state=None,
                      error=None, **{**_empty_detail(), **queued})
    origins = instances.origins(events)
    running = state.runtime_status not in TERMINAL_STATUSES
    context: dict[str, Any] = {
        "instance_id": instance_id, "view": view, "state": state, "error": None,
        "runtime_status": state.runtime_status.name,
        "input": instances.pretty(state.serialized_input),
        "output": instances.pretty(state.serialized_output),
        "custom_status": instances.pretty(state.serialized_custom_status),
        "failure": state.failure_details,
        "origins": origins,
        "family": instances.family(events),
        "awaiting_approval": awaiting_approval(state),
        "declared_events": _declared_events(state.name),
        "running": running,
        "refresh": _refresh(request, running),
        "trace_id": traces.trace_id(origins.trace_parent),
        "trace_url": _trace_url(board, instance_id, traces.trace_id(origins.trace_parent)),
        "spans_since": board.started if board.spans is not None else None,
        "history": instances.history_items(events) if view == "history" else [],
        "timeline": _timeline(state, events) if view == "timeline" else None,
        "ticks": [],
        "queued": [], "queue_error": None,
    }
    if context["timeline"] is not None:
        context["ticks"] = timeline.ticks(context["timeline"])
    if view == "messages":
        context.update(await _queued(request, instance_id, origins.message_ids))
    return render(request, "instance.html", **context)


def _trace_url(board: Any, instance_id: str, trace: str | None) -> str | None:
    """The link to the trace, except to our own waterfall when this process no longer holds its spans (a trace
    from before a restart): the page then says why there is no link instead of leading to nothing."""
    url: str | None = board.trace_link(instance_id, trace)
    if url is not None and trace is not None and board.trace_link is traces.local_traces and board.spans is not None \
            and not board.spans.trace(trace):
        return None
    return url


def _empty_detail() -> dict[str, Any]:
    return {"runtime_status": None, "input": "", "output": "", "custom_status": "", "failure": None,
            "origins": instances.Origins(), "family": instances.Family(), "awaiting_approval": False,
            "declared_events": [], "running": False,
            "refresh": 0,
            "trace_id": None, "trace_url": None, "spans_since": None, "history": [], "timeline": None, "ticks": [],
            "queued": [], "queue_error": None}


async def _history(dts: Any, instance_id: str) -> list[Any]:
    try:
        result: list[Any] = await dts.get_orchestration_history(instance_id)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return result


async def _queued(request: web.Request, instance_id: str, message_ids: list[str]) -> dict[str, Any]:
    try:
        found = await asyncio.gather(*(queue.about_instance(instance_id, message_ids)
                                       for queue in backend(request).queues))
        return {"queued": [message for part in found for message in part], "queue_error": None}
    except Exception as error:
        log.warning("peeking the queue failed: %s", one_line(error, 500))
        return {"queued": [], "queue_error": f"Service Bus did not answer: {one_line(error, 500)}"}


def _declared_events(orchestration: str | None) -> list[tuple[str, str]]:
    """(name, an example of its data) for each event the orchestration declares: the raise form's choices."""
    found = []
    for name in registry.events_of(orchestration):
        declared = CATALOG.get(name)
        examples = declared.schema.get("examples", []) if declared is not None else []
        found.append((name, json.dumps(examples[0]) if examples else "{}"))
    return found


def awaiting_approval(state: OrchestrationState) -> bool:
    """An approval workflow that is running and says, in its custom status, that it waits for a decision."""
    if not registry.accepts_approvals(state.name) or state.runtime_status != OrchestrationStatus.RUNNING:
        return False
    custom = instances.parse_json(state.serialized_custom_status)
    return isinstance(custom, dict) and custom.get("stage") == "awaiting_approval"


def _timeline(state: OrchestrationState, events: list[Any]) -> timeline.Timeline:
    running = state.runtime_status not in TERMINAL_STATUSES
    return timeline.build(events, now=datetime.now(UTC), running=running,
                          awaiting=[APPROVAL_EVENT] if awaiting_approval(state) else [])


def _refresh(request: web.Request, running: bool) -> int:
    """Pages of instances still going reload every few seconds unless `refresh=0` says otherwise."""
    if not running:
        return 0
    raw = request.query.get("refresh")
    if raw is None:
        return DETAIL_REFRESH
    try:
        value = int(raw)
    except ValueError:
        return 0
    return value if value in instances.REFRESH_CHOICES else 0
