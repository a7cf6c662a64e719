"""Request handlers. Shared here: rendering a template with the page frame, and one-shot notices after a POST.

After a state-changing POST the browser is redirected (303) to a page it can reload safely; what happened is
carried to that page in a short-lived cookie, so no URL can be crafted to show a made-up notice.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from aiohttp.typedefs import Handler
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

from sbworker.dashboard import pages, security
from sbworker.dashboard.backend import BACKEND, Backend

log = logging.getLogger(__name__)

FLASH_COOKIE = "sbw_notice"


HUB_COOKIE = "sbw_hub"


def backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def hub(request: web.Request) -> str:
    """The task hub this request looks at: `?hub=`, else the one chosen before (a cookie), else the service's."""
    hubs = backend(request).hubs
    for candidate in (request.query.get("hub"), request.cookies.get(HUB_COOKIE)):
        if candidate in hubs:
            return candidate
    return hubs[0]


def dts(request: web.Request) -> AsyncDurableTaskSchedulerClient:
    return backend(request).dts_for(hub(request))


async def choose_hub(request: web.Request) -> web.StreamResponse:
    """The header's task hub selector: remembered in a cookie (this browser only), then back to the page."""
    form = await request.post()
    chosen = form.get("hub")
    back = security.local_path(str(form.get("next") or "/instances"))
    if not isinstance(chosen, str) or chosen not in backend(request).hubs:
        return redirect(back, "Unknown task hub.", error=True)
    response = redirect(back, f"Task hub {chosen}.")
    response.set_cookie(HUB_COOKIE, chosen, httponly=True, samesite="Strict", path="/")
    return response


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """A page with the frame every page shares. `context` values are escaped by the template engine."""
    board = backend(request)
    chosen = hub(request)
    board.sampler(chosen).start()  # the overview's history begins with the first page anyone opens
    settings = board.settings
    notice = _notice(request)
    identity = request[security.IDENTITY]
    page = request.app[pages.TEMPLATES].get_template(template).render(
        can_act=identity.can_act,
        who=identity.name,
        signed_in=identity.method == "session",
        read_only_reason=security.read_only_reason(request.app[security.ACCESS]),
        csrf_token=request[security.TOKEN_KEY],
        csrf_field=security.CSRF_FIELD,
        taskhub=chosen,
        hubs=board.hubs,
        service_hub=chosen == board.hubs[0],
        here=request.path_qs,
        dts_endpoint=settings.dts.endpoint,
        queue_name=settings.servicebus.source.entity.path,
        queue_title=backend(request).queue.title,
        publish_target=backend(request).queue.publish_target,
        servicebus_endpoint=settings.servicebus.endpoint_for_logs,
        sessions=settings.servicebus.source.sessions,  # the queue pages show each message's session id
        static=lambda name: pages.static_url(request, name),
        notice=notice,
        path=request.path,
        status_code=status,
        **context,
    )
    response = web.Response(text=page, content_type="text/html", status=status)
    if notice is not None:
        response.del_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(location: str, notice: str | None = None, *, error: bool = False) -> web.HTTPSeeOther:
    """303 to a GET page, carrying a notice for it to show once."""
    response = web.HTTPSeeOther(location)
    if notice:
        value = quote(json.dumps({"text": notice[:2000], "error": error}))
        response.set_cookie(FLASH_COOKIE, value, httponly=True, samesite="Strict", path="/", max_age=60)
    return response


def _notice(request: web.Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return {"text": value["text"], "error": bool(value.get("error"))}


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's bare `404: Not Found` (and every other error a handler raises) as a page in the frame."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = {404: f"There is no page at {request.path[:200]}.",
                   405: f"{request.method} is not accepted at {request.path[:200]}."}.get(
                       error.status, (error.text or "").strip() or pages.TITLES.get(error.status, "Error"))
        return render(request, "error.html", status=error.status, title=pages.TITLES.get(error.status, "Error"),
                      message=message)
    except Exception:
        log.exception("%s %s failed", request.method, request.path[:200])
        return render(request, "error.html", status=500, title=pages.TITLES[500],
                      message="The dashboard failed on this page; the server's log says why.")
