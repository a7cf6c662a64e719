"""Every request passes here first: Host allow-list, authentication, CSRF and same origin, read-only, headers.

- **Host.** Only the names in `Access.allowed_hosts` are served (421 otherwise), in every mode: a hostile page whose
  name resolves to this server (DNS rebinding) still sends its own name.
- **Authentication.** See sbworker/dashboard/access.py. Without credentials a page answers 401: the login form in
  token mode, a short explanation with Entra ID (the platform signs people in before they reach us).
- **CSRF.** Every state-changing request from a browser is a POST carrying a token that must equal the `sbw_csrf`
  cookie (double submit); the cookie is `SameSite=Strict` and `HttpOnly`. A POST whose `Origin` (or, without one,
  `Referer`) names another host, or that the browser marks `Sec-Fetch-Site: cross-site`, is refused. A script that
  authenticates with `Authorization: Bearer` needs no CSRF token: no browser adds that header by itself.
- **Read-only.** A POST that changes something is refused (403) unless the identity may act.
- **Headers.** A content security policy that allows scripts and styles from this server only (no inline script,
  so an escaped payload can never run even if escaping failed), no framing, no sniffing, no caching; every cookie
  `Secure` when the request came over TLS (directly, or through Container Apps' HTTPS ingress in entra mode).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from sbworker.dashboard import access as a
from sbworker.dashboard import audit, pages

log = logging.getLogger(__name__)

CSRF_COOKIE = "sbw_csrf"
CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "sbw_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# Reachable without credentials (still only under an allowed Host): the login form, its stylesheet, liveness.
OPEN_PREFIXES = ("/login", "/static/", "/healthz")
# POSTs that change nothing in DTS or Service Bus: allowed to a read-only identity.
NOT_ACTIONS = ("/login", "/logout", "/hub")
FAILED_LOGIN_DELAY = 0.5  # seconds: guessing a 16-character token online is hopeless, and slower still

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_KEY = web.RequestKey("csrf_token", str)
IDENTITY = a.IDENTITY
ACCESS = a.ACCESS
remote_address = a.remote_address


def middleware(access: a.Access) -> Middleware:
    """The checks above, for every request, and the headers and cookies, for every response."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not access.host_allowed(a.host_name(request.host)):
            log.warning("refused %s %s: Host %r is not allowed", request.method, request.path[:200],
                        request.host[:200])
            return _finish(request, pages.bare(request, 421, "This dashboard does not answer to that host name."),
                           None)
        token = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not _well_formed(token)
        if fresh:
            token = secrets.token_urlsafe(32)
        request[TOKEN_KEY] = token
        identity = identify(access, request)
        if identity is None:
            if request.path.startswith(OPEN_PREFIXES):
                identity = a.Identity(name="anonymous", method="none", can_act=False)
            else:
                return _finish(request, unauthenticated(request, access), token if fresh else None)
        request[IDENTITY] = identity
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            refusal = None if identity.method == "bearer" else await _refusal(request, None if fresh else token)
            if refusal is None and not identity.can_act and request.path not in NOT_ACTIONS:
                refusal = read_only_reason(access)
            if refusal:
                log.warning("refused %s %s from %s: %s", request.method, request.path[:200], identity.name, refusal)
                if "read-only" in refusal or "app role" in refusal:
                    audit.record(request, request.path, audit.REFUSED, detail=refusal)
                text = f"Refused: {refusal}." + (" Reload the page and try again." if "CSRF" in refusal
                                                 or "cross-" in refusal else "")
                return _finish(request, pages.bare(request, 403, text), token if fresh else None)
        try:
            response = await handler(request)
        except web.HTTPException as raised:  # a redirect raised by a handler: the same headers and cookies
            _finish(request, raised, token if fresh else None)
            raise
        return _finish(request, response, token if fresh else None)

    return guard


def identify(access: a.Access, request: web.Request) -> a.Identity | None:
    """Who sent this request, or None when it carries no valid credentials."""
    if access.mode == "entra":
        return a.entra_identity(access, request.headers)
    if access.mode == "token":
        if a.bearer_ok(access, request.headers.get("Authorization")):
            return a.Identity(name="token", method="bearer", can_act=access.actions)
        if a.session_ok(access, request.cookies.get(SESSION_COOKIE)):
            return a.Identity(name="token (signed in)", method="session", can_act=access.actions)
        return None
    return a.Identity(name="local user", method="local", can_act=access.actions)


def read_only_reason(access: a.Access) -> str:
    if not access.actions:
        return "this dashboard is read-only (start it with --allow-actions to allow changes)"
    return f"changes need the {access.action_role!r} app role"


def unauthenticated(request: web.Request, access: a.Access) -> web.Response:
    if access.mode == "token":
        page = login_page(request, 401, "", local_path(request.path_qs))
        page.headers["WWW-Authenticate"] = 'Bearer realm="sbworker dashboard"'
        return page
    return pages.bare(request, 401, "Not signed in: this dashboard expects Container Apps authentication "
                                    "(Entra ID) in front of it.")


def login_page(request: web.Request, status: int, message: str, next_path: str) -> web.Response:
    return pages.bare(request, status, message, template="login.html", csrf_token=request[TOKEN_KEY],
                      csrf_field=CSRF_FIELD, next=next_path)


async def login_form(request: web.Request) -> web.StreamResponse:
    access = request.app[ACCESS]
    if access.mode != "token":
        raise web.HTTPFound("/instances")
    return login_page(request, 200, "", local_path(request.query.get("next", "/instances")))


async def login(request: web.Request) -> web.StreamResponse:
    """The token typed once: a signed session cookie instead of the token itself."""
    access = request.app[ACCESS]
    if access.mode != "token":
        raise web.HTTPFound("/instances")
    form = await request.post()
    typed, next_path = form.get("token"), local_path(str(form.get("next") or "/instances"))
    if not isinstance(typed, str) or not a.token_ok(access, typed):
        log.warning("failed sign-in from %s", remote_address(access, request))
        await asyncio.sleep(FAILED_LOGIN_DELAY)
        return login_page(request, 401, "That is not the token.", next_path)
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(SESSION_COOKIE, a.new_session(access), httponly=True, samesite="Strict", path="/",
                        max_age=a.SESSION_SECONDS)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login" if request.app[ACCESS].mode == "token" else "/instances")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def local_path(raw: str) -> str:
    """Where to go after signing in: a path on this server only (never `//evil.example` or a full URL)."""
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. an unclosed '[': not a path of ours
        return "/instances"
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/instances"
    if parts.path in ("/login", "/logout"):
        return "/instances"
    return raw[:2000]


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": next_path})


def over_tls(request: web.Request) -> bool:
    """TLS to us, or to Container Apps' ingress in front of us (it sets X-Forwarded-Proto; entra mode only)."""
    if request.secure:
        return True
    return request.app[ACCESS].mode == "entra" and request.headers.get("X-Forwarded-Proto", "") == "https"


def _finish(request: web.Request, response: web.StreamResponse, new_csrf: str | None) -> web.StreamResponse:
    _headers(response)
    if new_csrf is not None:
        response.set_cookie(CSRF_COOKIE, new_csrf, httponly=True, samesite="Strict", path="/")
    if over_tls(request):
        for morsel in response.cookies.values():
            morsel["secure"] = True
    return response


async def _refusal(request: web.Request, cookie_token: str | None) -> str | None:
    """Why this state-changing request from a browser is refused, or None."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request"
    origin = request.headers.get("Origin")
    if origin is not None:
        if not _same_host(request, origin):
            return "cross-origin request"
    else:
        referer = request.headers.get("Referer")
        if referer is not None and not _same_host(request, referer):
            return "cross-origin request"
    if cookie_token is None:
        return "missing CSRF cookie"
    form = await request.post()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), cookie_token.encode()):
        return "bad CSRF token"
    return None


def _same_host(request: web.Request, url: str) -> bool:
    """Same host and port as this request. The scheme is not compared: behind a TLS-terminating ingress the page
    is https while we see http, and the Host allow-list already decides which names are ours."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an Origin or Referer that is not a URL is not ours
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def _well_formed(token: str) -> bool:
    return 20 <= len(token) <= 128 and all(c.isalnum() or c in "-_" for c in token)


def _headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
