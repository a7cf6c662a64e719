"""The queue page (counts and the dead-letter queue) and the dead-letter actions (resubmit, delete)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from dashboard.views import backend, redirect, render, sdk_error

log = logging.getLogger(__name__)


async def queue_page(request: web.Request) -> web.Response:
    refresh = request.query.get("refresh", "0")
    try:
        view = await backend(request).queue.view()
    except Exception as error:
        log.warning("peeking the queue failed: %s", sdk_error(error))
        return render(request, "queue.html", status=502, view=None, refresh=0,
                      error=f"Service Bus did not answer: {sdk_error(error)}")
    return render(request, "queue.html", view=view, refresh=int(refresh) if refresh in ("2", "5", "10", "30") else 0,
                  error=None)


async def dead_letter_action(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    action = request.match_info["action"]
    everything = form.get("all") == "on"
    try:
        chosen = {int(str(value)) for value in form.getall("seq", [])}
    except ValueError:
        return redirect("/queue", "Sequence numbers are whole numbers.", error=True)
    if not chosen and not (everything and action == "resubmit"):
        return redirect("/queue", "Choose at least one message.", error=True)
    queue = backend(request).queue
    try:
        if action == "resubmit":
            result = await asyncio.to_thread(queue.resubmit, None if everything else chosen)
            text = f"Resubmitted {len(result.done)} message(s) to {queue.name!r}: {_numbers(result.done)}."
            if result.missing:
                text += f" Not in the dead-letter queue: {_numbers(result.missing)}."
            if result.arrived_since:
                text += f" {result.arrived_since} message(s) dead-lettered meanwhile were left for the next look."
            return redirect("/queue", text, error=bool(result.missing))
        done = await queue.delete_dead_letters(chosen)
        missing = sorted(chosen - set(done))
        text = f"Deleted {len(done)} dead-lettered message(s): {_numbers(sorted(done))}."
        if missing:
            text += f" Not found: {_numbers(missing)}."
        return redirect("/queue", text, error=bool(missing))
    except Exception as error:
        log.warning("dead-letter %s failed: %s", action, sdk_error(error))
        return redirect("/queue", f"{action} failed: {sdk_error(error)}", error=True)


def _numbers(values: list[int]) -> str:
    return " ".join(f"#{v}" for v in values) or "none"
