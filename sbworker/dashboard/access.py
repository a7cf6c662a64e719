"""Who may use the dashboard, from where, and whether they may change anything: the settings and their checks.

Three ways in, chosen when the server starts (never per request):
- **local**: loopback only, no credentials. Anyone who can open a socket on this machine is trusted, as with
  `sbworker dev`'s other ports.
- **token**: `DASHBOARD_TOKEN`, sent as `Authorization: Bearer <token>` (scripts) or typed once into the login page,
  which sets a signed session cookie (HttpOnly, SameSite=Strict, Secure under TLS).
- **entra**: behind Azure Container Apps authentication (Entra ID). The platform signs users in and passes who they
  are in `X-MS-CLIENT-PRINCIPAL*` headers; those headers are trusted in this mode only, where no request reaches the
  container without passing the platform first. In any other mode they are ignored.

Whatever the mode, the Host header must be one of `allowed_hosts` (421 otherwise), so a hostile page whose name
resolves to this server (DNS rebinding) is refused. A server reachable from other machines is read-only unless
`actions` is set, and with Entra ID a user also needs the `action_role` app role.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from sbworker.core.errors import ConfigError
from sbworker.core.net import is_loopback

Mode = Literal["local", "token", "entra"]
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIN_TOKEN_CHARS = 16
SESSION_SECONDS = 12 * 3600
DEFAULT_ACTION_ROLE = "Dashboard.Operator"

# Container Apps authentication (the same headers as App Service's "Easy Auth").
PRINCIPAL_NAME = "X-MS-CLIENT-PRINCIPAL-NAME"
PRINCIPAL_ID = "X-MS-CLIENT-PRINCIPAL-ID"
PRINCIPAL = "X-MS-CLIENT-PRINCIPAL"  # base64 JSON: {"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}


@dataclass(frozen=True)
class Access:
    mode: Mode = "local"
    token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    actions: bool = True
    action_role: str = DEFAULT_ACTION_ROLE

    def host_allowed(self, name: str) -> bool:
        return name.lower().rstrip(".") in self.allowed_hosts


@dataclass(frozen=True)
class Identity:
    """Who sent a request, as the audit line names them, and what they may do."""

    name: str
    method: str  # local, bearer, session, entra
    can_act: bool
    roles: frozenset[str] = frozenset()


def configure(*, host: str, allow_remote: bool, auth: str | None, token: str | None, extra_hosts: list[str],
              actions: bool | None, action_role: str | None = None) -> Access:
    """The access rules for a server bound to `host`, or ConfigError (one line, exit code 2) naming the setting.

    `actions`: None means the default, which is on for loopback and off for anything else.
    """
    remote = not is_loopback(host)
    if remote and not allow_remote:
        raise ConfigError("--host", f"{host} is reachable from other machines: add --allow-remote (with "
                                    "DASHBOARD_TOKEN or --auth entra), or listen on 127.0.0.1")
    token = (token or "").strip() or None
    mode: Mode
    if auth in (None, ""):
        mode = "token" if token else "local"
    elif auth in ("token", "entra"):
        mode = auth  # type: ignore[assignment]
    else:
        raise ConfigError("--auth", f"expected token or entra, got {auth!r}")
    if mode == "token":
        if token is None:
            raise ConfigError("DASHBOARD_TOKEN", "is not set, but --auth token needs it")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError("DASHBOARD_TOKEN", f"is shorter than {MIN_TOKEN_CHARS} characters: use a random one "
                                                 "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    if remote and mode == "local":
        raise ConfigError("--allow-remote", "needs an authentication mode: set DASHBOARD_TOKEN, or --auth entra "
                                            "behind Container Apps authentication")
    hosts = list(LOOPBACK_NAMES)
    for raw in extra_hosts:
        name = raw.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
        if not name or (any(c in name for c in "/:@ ") and not _is_address(name)):
            raise ConfigError("--allowed-host", f"expected a host name (no scheme, port or path), got {raw!r}")
        hosts.append(name)
    return Access(mode=mode, token=token, allowed_hosts=tuple(dict.fromkeys(hosts)),
                  actions=(not remote) if actions is None else actions,
                  action_role=(action_role or "").strip() or DEFAULT_ACTION_ROLE)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(host_header: str) -> str:
    """`localhost:8082` → `localhost`, `[::1]:8082` → `::1`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def bearer_ok(access: Access, header: str | None) -> bool:
    if access.mode != "token" or access.token is None or not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), access.token.encode())


def token_ok(access: Access, typed: str) -> bool:
    return access.token is not None and hmac.compare_digest(typed.strip().encode(), access.token.encode())


def _session_key(token: str) -> bytes:
    """Sessions are signed with a key derived from the token: changing the token ends every session."""
    return hmac.new(token.encode(), b"sbworker dashboard session", hashlib.sha256).digest()


def new_session(access: Access, now: float | None = None) -> str:
    assert access.token is not None
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    body = f"{expires}.{secrets.token_urlsafe(16)}"
    mac = hmac.new(_session_key(access.token), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def session_ok(access: Access, cookie: str | None, now: float | None = None) -> bool:
    if access.mode != "token" or access.token is None or not cookie or cookie.count(".") != 2:
        return False
    body, _, mac = cookie.rpartition(".")
    wanted = hmac.new(_session_key(access.token), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.encode(), wanted.encode()):
        return False
    try:
        expires = int(body.split(".", 1)[0])
    except ValueError:
        return False
    return expires > (now if now is not None else time.time())


def entra_identity(access: Access, headers: Mapping[str, str]) -> Identity | None:
    """The signed-in user from Container Apps' headers (entra mode only), or None when they are absent."""
    if access.mode != "entra":
        return None
    name = headers.get(PRINCIPAL_NAME, "").strip()
    user_id = headers.get(PRINCIPAL_ID, "").strip()
    if not name and not user_id:
        return None
    roles = principal_roles(headers.get(PRINCIPAL, ""))
    return Identity(name=name or user_id, method="entra", roles=roles,
                    can_act=access.actions and access.action_role in roles)


def principal_roles(encoded: str) -> frozenset[str]:
    """The app roles in `X-MS-CLIENT-PRINCIPAL`: claims whose type is its `role_typ` (or `roles`)."""
    if not encoded:
        return frozenset()
    try:
        principal = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error):
        return frozenset()
    if not isinstance(principal, dict) or not isinstance(principal.get("claims"), list):
        return frozenset()
    kinds = {"roles", principal.get("role_typ") or "roles"}
    return frozenset(str(c.get("val")) for c in principal["claims"]
                     if isinstance(c, dict) and c.get("typ") in kinds and c.get("val"))


IDENTITY = web.RequestKey("identity", Identity)
ACCESS = web.AppKey("access", Access)


def remote_address(access: Access, request: web.Request) -> str:
    """The client's address; behind Container Apps (entra mode) the first X-Forwarded-For hop, which it sets."""
    if access.mode == "entra":
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    return request.remote or ""
