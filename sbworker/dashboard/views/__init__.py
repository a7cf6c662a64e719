"""Request handlers. Shared here: rendering a template with the page frame, and one-shot notices after a POST.

After a state-changing POST the browser is redirected (303) to a page it can reload safely; what happened is
carried to that page in a short-lived cookie, so no URL can be crafted to show a made-up notice.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from sbworker.dashboard import security
from sbworker.dashboard.app import BACKEND, TEMPLATES, Backend

FLASH_COOKIE = "sbw_notice"


def backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """A page with the frame every page shares. `context` values are escaped by the template engine."""
    settings = backend(request).settings
    notice = _notice(request)
    page = request.app[TEMPLATES].get_template(template).render(
        csrf_token=request[security.TOKEN_KEY],
        csrf_field=security.CSRF_FIELD,
        taskhub=settings.dts.taskhub,
        dts_endpoint=settings.dts.endpoint,
        queue_name=settings.servicebus.source.entity.path,
        queue_title=backend(request).queue.title,
        publish_target=backend(request).queue.publish_target,
        servicebus_endpoint=settings.servicebus.endpoint_for_logs,
        static=lambda name: str(request.app.router["static"].url_for(filename=name)),
        notice=notice,
        path=request.path,
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
