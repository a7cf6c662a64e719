"""State-changing requests: DTS management calls, and the three that go through the queue (approve, raise, start).

Approvals, declared events and new orchestrations are *published*, exactly as `sbworker publish` does, and the
listener turns them into DTS calls: the dashboard exercises the product's path and its contract checks instead of
bypassing them. Management that has no message in the contract (suspend, resume, terminate, restart, purge) goes
straight to DTS, as in the DTS dashboard. Every handler ends in a 303 to a page that is safe to reload.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from orchestrations import registry
from sbworker.core.config import Settings
from sbworker.core.contract import Rejected
from sbworker.core.errors import one_line
from sbworker.core.times import utc_text
from sbworker.dashboard import audit
from sbworker.dashboard.instances import form_time
from sbworker.dashboard.views import backend, dts, redirect, render
from sbworker.dashboard.views.instances import awaiting_approval
from sbworker.operations import publish

log = logging.getLogger(__name__)

MAX_REASON = 1000
MAX_FIELD = 256 * 1024


def instance_url(instance_id: str, view: str = "") -> str:
    return f"/instance{'/' + view if view else ''}?{urlencode({'id': instance_id})}"


async def instance_action(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    instance_id = _text(form, "id")
    action = request.match_info["action"]
    if not instance_id:
        raise web.HTTPBadRequest(text="missing instance id\n")
    handler = _ACTIONS.get(action)
    if handler is None:
        raise web.HTTPNotFound(text=f"no action {action!r}\n")
    if action in CONFIRMED and form.get("confirmed") != "yes":
        return await confirm_instances(request, action, [instance_id], form, f"/instance/{action}",
                                       instance_url(instance_id))
    here = instance_url(instance_id)
    try:
        response = await handler(request, instance_id, form)
    except _Refused as refused:
        audit.record(request, action, audit.REFUSED, instances=[instance_id], detail=str(refused))
        return redirect(here, str(refused), error=True)
    except Exception as error:
        log.warning("%s of instance %r failed: %s", action, instance_id[:128], one_line(error, 500))
        audit.record(request, action, audit.FAILED, instances=[instance_id], detail=one_line(error, 500))
        return redirect(here, f"{action} failed: {one_line(error, 500)}", error=True)
    audit.record(request, action, audit.OK, instances=[instance_id])
    return response


# Actions whose form first shows what they will affect and asks again (every bulk action does too).
CONFIRMED = frozenset({"terminate", "purge"})
BULK_LIMIT = 100  # instances one bulk action takes: a page of the list at most
BULK_PARALLEL = 8


async def confirm_instances(request: web.Request, action: str, instance_ids: list[str], form: MultiDictProxy[Any],
                            post_to: str, back: str) -> web.Response:
    """The confirmation step: each instance as it is now, and what the action will do to it."""
    client = dts(request)
    states = await asyncio.gather(*(client.get_orchestration_state(i, fetch_payloads=False) for i in instance_ids),
                                  return_exceptions=True)
    items = []
    for instance_id, state in zip(instance_ids, states, strict=True):
        if isinstance(state, BaseException):
            items.append({"id": instance_id, "name": "", "status": "", "note": f"not read: {one_line(state, 200)}"})
        elif state is None:
            items.append({"id": instance_id, "name": "", "status": "", "note": "no such instance: nothing to do"})
        else:
            items.append({"id": instance_id, "name": state.name, "status": state.runtime_status.name,
                          "note": _effect(action, state.runtime_status.name)})
    fields = [(k, v) for k, v in form.items() if isinstance(v, str) and k not in ("csrf_token", "confirmed")]
    affected = sum(1 for item in items if not item["note"].startswith(("no such", "skipped", "not read")))
    return render(request, "confirm.html", action=action, items=items, fields=fields, post_to=post_to, back=back,
                  affected=affected, reason=_text(form, "reason").strip(), kind="instance", target="")


def _effect(action: str, status: str) -> str:
    running = status not in ("COMPLETED", "FAILED", "TERMINATED")
    if action == "terminate":
        return "will be terminated" if running else f"skipped: already {status.lower()}"
    if action == "purge":
        return "will be deleted with its history" if not running else f"skipped: still {status.lower()}"
    if action == "rewind":
        return "will be rewound to retry its failed work" if status == "FAILED" else "skipped: not failed"
    if action == "suspend":
        return "will be suspended" if status in ("RUNNING", "PENDING") else f"skipped: {status.lower()}"
    if action == "resume":
        return "will be resumed" if status == "SUSPENDED" else f"skipped: {status.lower()}"
    return ""


async def bulk_action(request: web.Request) -> web.StreamResponse:
    """The list's multi-select: one action on every chosen instance, after the confirmation step."""
    form = await request.post()
    action = request.match_info["action"]
    back = _back(_text(form, "back"))
    ids = list(dict.fromkeys(v for v in form.getall("id", []) if isinstance(v, str) and v))
    if not ids:
        return redirect(back, "Choose at least one instance.", error=True)
    if len(ids) > BULK_LIMIT:
        return redirect(back, f"At most {BULK_LIMIT} instances at once.", error=True)
    if form.get("confirmed") != "yes":
        return await confirm_instances(request, action, ids, form, f"/instances/bulk/{action}", back)
    try:
        reason = _reason(form)
    except _Refused as refused:
        return redirect(back, str(refused), error=True)
    client = dts(request)
    gate = asyncio.Semaphore(BULK_PARALLEL)

    async def one(instance_id: str) -> str:
        async with gate:
            try:
                state = await client.get_orchestration_state(instance_id, fetch_payloads=False)
                if state is None:
                    return "skipped: no such instance"
                effect = _effect(action, state.runtime_status.name)
                if effect.startswith("skipped"):  # as the confirmation said: only what the action applies to
                    return effect
                if action == "terminate":
                    await client.terminate_orchestration(instance_id, output=reason)
                elif action == "purge":
                    purged = await client.purge_orchestration(instance_id)
                    if not purged.deleted_instance_count:
                        return "not purged (not ended, or gone)"
                elif action == "rewind":
                    await client.rewind_orchestration(instance_id, reason=reason)
                elif action == "suspend":
                    await client.suspend_orchestration(instance_id, reason=reason)
                else:
                    await client.resume_orchestration(instance_id, reason=reason)
            except Exception as error:
                return one_line(error, 200)
            return audit.OK

    results = dict(zip(ids, await asyncio.gather(*(one(i) for i in ids)), strict=True))
    done = [i for i, r in results.items() if r == audit.OK]
    result = audit.OK if len(done) == len(ids) else audit.PARTLY if done else audit.FAILED
    audit.record(request, f"bulk {action}", result, instances=ids, outcomes=results)
    verb = {"terminate": "Terminate requested for", "purge": "Purged", "rewind": "Rewind requested for",
            "suspend": "Suspended", "resume": "Resumed"}[action]
    text = f"{verb} {len(done)} of {len(ids)} instance(s)."
    failed = [f"{i}: {r}" for i, r in results.items() if r != audit.OK]
    if failed:
        text += " Not done: " + "; ".join(failed[:10]) + (" …" if len(failed) > 10 else "")
    return redirect(back, text, error=bool(failed))


def _back(raw: str) -> str:
    """Where a bulk action returns: the list the instances were chosen on (this server's /instances only)."""
    return raw if raw.startswith("/instances") and "//" not in raw and len(raw) < 4000 else "/instances"


class _Refused(Exception):
    """The form asks for something that cannot be done: shown as the notice, nothing was sent."""


async def _suspend(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    await dts(request).suspend_orchestration(instance_id, reason=_reason(form))
    return redirect(instance_url(instance_id), "Suspended.")


async def _resume(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    await dts(request).resume_orchestration(instance_id, reason=_reason(form))
    return redirect(instance_url(instance_id), "Resumed.")


async def _terminate(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    reason = _reason(form)
    # DTS has no separate reason for a termination: the DTS dashboard, too, records it as the output.
    await dts(request).terminate_orchestration(instance_id, output=reason)
    return redirect(instance_url(instance_id), "Terminate requested" + (f" (reason: {reason})." if reason else "."))


async def _restart(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    new_id = _text(form, "new_instance_id") == "on"
    restarted = await dts(request).restart_orchestration(instance_id, restart_with_new_instance_id=new_id)
    return redirect(instance_url(restarted), f"Restarted as {restarted}." if new_id else "Restarted.")


async def _purge(request: web.Request, instance_id: str, _form: MultiDictProxy[Any]) -> web.StreamResponse:
    result = await dts(request).purge_orchestration(instance_id)
    if not result.deleted_instance_count:
        raise _Refused("Nothing purged: only completed, failed or terminated instances can be purged.")
    return redirect("/instances", f"Purged {instance_id}.")


async def _raise_event(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    """Publish an event message, as `sbworker publish event` does: one the instance's orchestration declares, its
    data checked against the event's schema (and every other rule of the listener) before anything is sent."""
    board = backend(request)
    name = _text(form, "event_name").strip()
    data = _json_field(form, "event_data", "event data")
    state = await dts(request).get_orchestration_state(instance_id, fetch_payloads=False)
    orchestration = state.name if state is not None else None
    declared = registry.events_of(orchestration)
    if name not in declared:
        waits = f"waits for {', '.join(declared)}" if declared else "waits for no declared event"
        raise _Refused(f"Not sent: {orchestration or 'this instance'} {waits}, not {name!r}.")
    try:
        message = publish.event_message(instance_id, name, data, bounds=board.settings.limits)
    except Rejected as rejected:
        raise _Refused(f"Not sent: {rejected} ({rejected.reason}).") from None
    await board.queue.send(message)
    return redirect(instance_url(instance_id),
                    f"Event {name} sent through {board.queue.publish_target} as message {message.message_id}.")


async def _approve(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    """Publish an approval message, as `sbworker publish approve` does: the listener raises the event."""
    board = backend(request)
    decision = _text(form, "decision")
    if decision not in ("approve", "reject"):
        raise _Refused("Choose Approve or Reject.")
    approver = _text(form, "approver").strip()
    comment = _text(form, "comment").strip() or None
    state = await dts(request).get_orchestration_state(instance_id, fetch_payloads=True)
    if state is None or not awaiting_approval(state):
        raise _Refused("This instance is not waiting for an approval.")
    try:
        message = _messages(board.settings).approval(instance_id, decision == "approve", approver, comment,
                                                     session_id=_text(form, "session_id").strip() or None).message
    except ValueError as error:
        raise _Refused(f"Not sent: {error}") from None
    await board.queue.send(message)
    verb = "Approval" if decision == "approve" else "Rejection"
    return redirect(instance_url(instance_id),
                    f"{verb} sent through {board.queue.publish_target} as message {message.message_id}.")


async def _rewind(request: web.Request, instance_id: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
    """Rewind a failed instance: its failed work runs again, what succeeded is kept (DTS and localdts)."""
    await dts(request).rewind_orchestration(instance_id, reason=_reason(form))
    return redirect(instance_url(instance_id), "Rewind requested: the failed work runs again.")


_ACTIONS = {
    "rewind": _rewind,
    "suspend": _suspend,
    "resume": _resume,
    "terminate": _terminate,
    "restart": _restart,
    "purge": _purge,
    "raise": _raise_event,
    "approve": _approve,
}


async def new_form(request: web.Request) -> web.Response:
    return render(request, "new.html", names=registry.orchestration_names(), values={}, error=None)


async def new_start(request: web.Request) -> web.StreamResponse:
    """Publish a start message (the product path) and go to the instance it will create."""
    form = await request.post()
    values = {key: _text(form, key) for key in ("orchestration", "input", "instance_id", "start_at", "session_id")}
    try:
        name = values["orchestration"]
        if not registry.is_startable(name):
            names = ", ".join(registry.orchestration_names())
            raise _Refused(f"Unknown orchestration {name!r}; choose one of {names}.")
        data = _json_field(form, "input", "input")
        start_at = _start_at(values["start_at"])
        try:
            outgoing = _messages(backend(request).settings).start(
                name, data, instance_id=values["instance_id"].strip() or None, start_at=start_at,
                session_id=values["session_id"].strip() or None)
            message, instance_id = outgoing.message, outgoing.instance_id
        except ValueError as error:
            raise _Refused(f"Not sent: {error}") from None
        await backend(request).queue.send(message)
    except _Refused as refused:
        audit.record(request, "start", audit.REFUSED, detail=str(refused))
        return render(request, "new.html", status=400, names=registry.orchestration_names(), values=values,
                      error=str(refused))
    except Exception as error:
        log.warning("publishing a start failed: %s", one_line(error, 500))
        audit.record(request, "start", audit.FAILED, detail=one_line(error, 500))
        return render(request, "new.html", status=502, names=registry.orchestration_names(), values=values,
                      error=f"Service Bus did not take the message: {one_line(error, 500)}")
    audit.record(request, "start", audit.OK, instances=[instance_id], detail=f"message {message.message_id}")
    when = f", to start at {utc_text(start_at)}" if start_at else ""
    return redirect(instance_url(instance_id),
                    f"Start message {message.message_id} sent through {backend(request).queue.publish_target}{when}.")


def _messages(settings: Settings) -> publish.Messages:
    """What `sbworker publish` builds: the configured bounds, and in session mode each message in its instance's
    session unless the form names another."""
    return publish.Messages(bounds=settings.limits, sessions=settings.servicebus.source.sessions)


def _text(form: MultiDictProxy[Any], key: str) -> str:
    value = form.get(key, "")
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{key}: expected text\n")
    if len(value) > MAX_FIELD:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FIELD, actual_size=len(value))
    return value


def _reason(form: MultiDictProxy[Any]) -> str | None:
    reason = _text(form, "reason").strip()
    if len(reason) > MAX_REASON:
        raise _Refused(f"The reason is longer than {MAX_REASON} characters.")
    return reason or None


def _json_field(form: MultiDictProxy[Any], key: str, label: str) -> Any:
    raw = _text(form, key).strip()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise _Refused(f"The {label} is not valid JSON: {error}.") from None


def _start_at(raw: str) -> datetime | None:
    try:
        return form_time(raw)
    except ValueError:
        raise _Refused(f"start_at is not an ISO-8601 time: {raw.strip()!r}.") from None
