"""What keeps a page on localhost from being driven by another site: the request checks and response headers.

- **CSRF.** Every state-changing request is a POST carrying a token that must equal the `sbw_csrf` cookie
  (double submit). The cookie is `SameSite=Strict` and `HttpOnly`, so another site can neither send it nor read it.
- **Same origin.** A POST whose `Origin` (or, without one, `Referer`) is another origin is refused, and so is one
  that the browser marks `Sec-Fetch-Site: cross-site`.
- **DNS rebinding.** Bound to loopback, only `Host: localhost / 127.0.0.1 / [::1]` is served: a hostile page
  whose name resolves to 127.0.0.1 still names its own host.
- **Headers.** A content security policy that allows scripts and styles from this server only (no inline
  script, so an escaped payload can never run even if escaping failed), no framing, no sniffing.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from sbworker.core.net import is_loopback

log = logging.getLogger(__name__)

CSRF_COOKIE = "sbw_csrf"
CSRF_FIELD = "csrf_token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_KEY = web.RequestKey("csrf_token", str)


def _host_name(host_header: str) -> str:
    """`localhost:8082` → `localhost`, `[::1]:8082` → `::1`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def middleware(*, loopback_only: bool) -> Middleware:
    """The checks above, for every request, and the headers, for every response."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback_only and not is_loopback(_host_name(request.host)):
            return web.Response(status=421, text="This dashboard answers only to localhost.\n")
        token = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not _well_formed(token)
        if fresh:
            token = secrets.token_urlsafe(32)
        request[TOKEN_KEY] = token
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            refusal = await _refusal(request, None if fresh else token)
            if refusal:
                log.warning("refused %s %s: %s", request.method, request.path, refusal)
                return web.Response(status=403, text=f"Refused: {refusal}. Reload the page and try again.\n")
        response = await handler(request)
        _headers(response)
        if fresh:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return guard


async def _refusal(request: web.Request, cookie_token: str | None) -> str | None:
    """Why this state-changing request is refused, or None."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request"
    own = f"{request.scheme}://{request.host}"
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin != own:
            return "cross-origin request"
    else:
        referer = request.headers.get("Referer")
        if referer is not None:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}" != own:
                return "cross-origin request"
    if cookie_token is None:
        return "missing CSRF cookie"
    form = await request.post()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), cookie_token.encode()):
        return "bad CSRF token"
    return None


def _well_formed(token: str) -> bool:
    return 20 <= len(token) <= 128 and all(c.isalnum() or c in "-_" for c in token)


def _headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
