"""The queue page (counts and the dead-letter queue) and the dead-letter actions (resubmit, delete)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from sbworker.core.errors import one_line
from sbworker.dashboard import audit
from sbworker.dashboard.queue import Queue
from sbworker.dashboard.views import backend, redirect, render

log = logging.getLogger(__name__)


def _chosen(request: web.Request, raw: object) -> tuple[int, Queue]:
    """`at`: which of the entities the listener reads (0: the queue or subscription, 1: the retry queue)."""
    queues = backend(request).queues
    at = int(raw) if isinstance(raw, str) and raw.isdigit() and int(raw) < len(queues) else 0
    return at, queues[at]


async def queue_page(request: web.Request) -> web.Response:
    refresh = request.query.get("refresh", "0")
    at, queue = _chosen(request, request.query.get("at", "0"))
    shown: dict[str, Any] = {"at": at, "shown": queue, "entities": backend(request).queues}
    try:
        view = await queue.view()
    except Exception as error:
        log.warning("peeking the queue failed: %s", one_line(error, 500))
        return render(request, "queue.html", status=502, view=None, refresh=0,
                      error=f"Service Bus did not answer: {one_line(error, 500)}", **shown)
    return render(request, "queue.html", view=view, refresh=int(refresh) if refresh in ("2", "5", "10", "30") else 0,
                  error=None, **shown)


async def dead_letter_action(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    at, queue = _chosen(request, form.get("at", "0"))
    back = f"/queue?at={at}" if at else "/queue"
    action = request.match_info["action"]
    everything = form.get("all") == "on"
    try:
        chosen = {int(str(value)) for value in form.getall("seq", [])}
    except ValueError:
        return redirect(back, "Sequence numbers are whole numbers.", error=True)
    if not chosen and not (everything and action == "resubmit"):
        return redirect(back, "Choose at least one message.", error=True)
    wanted = None if everything and action == "resubmit" else chosen
    if form.get("confirmed") != "yes":
        return await _confirm(request, queue, action, wanted, form, back)
    try:
        if action == "resubmit":
            result = await queue.resubmit(wanted)
            target = queue.settings.source.retry_queue
            text = f"Resubmitted {len(result.done)} message(s) to {target!r}: {_numbers(result.done)}."
            if result.missing:
                text += f" Not in the dead-letter queue: {_numbers(result.missing)}."
            if result.arrived_since:
                text += f" {result.arrived_since} message(s) dead-lettered meanwhile were left for the next look."
            text += "".join(f" Left {seq} in the dead-letter queue: it {why}." for seq, why in result.refused.items())
        else:
            result = await queue.delete_dead_letters(chosen)
            text = f"Deleted {len(result.done)} dead-lettered message(s): {_numbers(sorted(result.done))}."
            if result.missing:
                text += f" Not found: {_numbers(result.missing)}."
    except Exception as error:
        log.warning("dead-letter %s failed: %s", action, one_line(error, 500))
        audit.record(request, f"dead letters {action}", audit.FAILED, messages=sorted(chosen), entity=queue.name,
                     detail=one_line(error, 500))
        return redirect(back, f"{action} failed: {one_line(error, 500)}", error=True)
    failed = result.missing + sorted(result.refused)
    outcome = audit.OK if not failed else audit.PARTLY if result.done else audit.FAILED
    audit.record(request, f"dead letters {action}", outcome, messages=sorted(result.done), entity=queue.name,
                 detail=f"not found: {_numbers(result.missing)}" if result.missing else
                 f"refused: {_numbers(sorted(result.refused))}" if result.refused else "")
    return redirect(back, text, error=bool(failed))


async def _confirm(request: web.Request, queue: Queue, action: str, wanted: set[int] | None,
                   form: MultiDictProxy[Any], back: str) -> web.Response:
    """The confirmation step: the chosen dead letters as they are now (peeked)."""
    queue.prepare(resubmit=action == "resubmit")
    view = await queue.view()
    items = [{"id": f"#{m.sequence_number}", "name": m.message_id, "status": m.subject or "",
              "note": f"{m.reason or ''}: {m.description or ''}".strip(": ")}
             for m in view.dead_letters if wanted is None or m.sequence_number in wanted]
    affected = len(items)
    gone = sorted((wanted or set()) - {m.sequence_number for m in view.dead_letters})
    items += [{"id": f"#{seq}", "name": "", "status": "", "note": "no longer in the dead-letter queue"}
              for seq in gone]
    fields = [(k, v) for k, v in form.items() if isinstance(v, str) and k not in ("csrf_token", "confirmed")]
    return render(request, "confirm.html", action=action, items=items, fields=fields,
                  post_to=f"/queue/dead-letters/{action}", back=back, affected=affected, reason="",
                  kind="dead letter", target=queue.settings.source.retry_queue)


def _numbers(values: list[int]) -> str:
    return " ".join(f"#{v}" for v in values) or "none"
