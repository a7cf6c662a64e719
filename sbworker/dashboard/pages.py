"""The template engine and the pages that need no backend: errors, refusals and the login form.

Refusals (wrong Host, no credentials) are drawn without the header that names the task hub and endpoints: whoever
is refused learns nothing about what this dashboard reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from sbworker.core.limits import MAX_INSTANCE_ID_LENGTH
from sbworker.core.times import span_text, utc_text

PACKAGE = Path(__file__).resolve().parent
TEMPLATES = web.AppKey("templates", jinja2.Environment)

TITLES = {400: "Bad request", 401: "Sign in", 403: "Not allowed", 404: "Not found", 405: "Method not allowed",
          413: "Too large", 421: "Wrong host name", 500: "Something went wrong", 502: "Not answered"}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,  # every payload is text, whatever it contains
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.globals["MAX_INSTANCE_ID_LENGTH"] = MAX_INSTANCE_ID_LENGTH  # the forms' maxlength, as the contract checks
    return env


def when(moment: Any) -> str:
    """The one time format (sbworker/core/times.py); a time that is already text (a dead letter's) is kept."""
    return moment if isinstance(moment, str) else utc_text(moment)


def duration(seconds: Any) -> str:
    return span_text(float(seconds))


def static_url(request: web.Request, name: str) -> str:
    return str(request.app.router["static"].url_for(filename=name))


def bare(request: web.Request, status: int, message: str, *, template: str = "bare.html", **context: Any
         ) -> web.Response:
    """A page outside the frame: an error or refusal, or the login form."""
    page = request.app[TEMPLATES].get_template(template).render(
        status_code=status, title=TITLES.get(status, "Error"), message=message,
        static=lambda name: static_url(request, name), **context)
    return web.Response(text=page, content_type="text/html", status=status)
