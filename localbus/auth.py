"""Claims-based security: the ``$cbs`` put-token check, the grants it gives, and a log of presented tokens.

SAS tokens are verified as Service Bus verifies them: HMAC-SHA256 over ``<url-encoded uri>\\n<expiry>`` with the
configured key, the resource (``sr``) must name this namespace and cover the audience, and the grant ends at the
token's expiry. They are recognised by content, because SDK 7.15 sends them with token type ``jwt``. Real ``jwt``
tokens (Entra ID / managed identity) cannot be verified locally, so they are refused unless the operator opts in
(``accept_jwt``): an unverifiable token must never open the broker by default.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

SAS_TOKEN_TYPE = "servicebus.windows.net:sastoken"
JWT_TOKEN_TYPES = ("jwt", "servicebus.windows.net:jwt")
SAS_PREFIX = "SharedAccessSignature "
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
JWT_REFUSED = ("localbus cannot verify Entra ID / jwt tokens and refuses them; to accept them unverified (tests of "
               "managed identity), start it with --accept-jwt or LocalBus(accept_jwt=True)")


@dataclass(frozen=True)
class TokenResult:
    """Outcome of one put-token: ``ok``, an AMQP-style status and description, and what it grants.

    ``scope`` is the entity path the token covers (``""`` for the whole namespace) and ``expires_at`` the epoch
    seconds after which the grant ends (None: no expiry known).
    """

    ok: bool
    status: int
    description: str
    scope: str = ""
    expires_at: float | None = None


def split_uri(text: str) -> tuple[str | None, str]:
    """``sb://Host:5671/q/$DeadLetterQueue`` → (``host``, ``q/$deadletterqueue``); no scheme → (None, path)."""
    text = unquote_plus(text.strip())
    host: str | None = None
    if "://" in text:
        rest = text.split("://", 1)[1]
        netloc, _, text = rest.partition("/")
        host = netloc.rsplit("@", 1)[-1]
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        host = host.lower()
    return host, text.strip("/").lower()


def audience_path(audience: str) -> str:
    """``sb://host:port/queue/$DeadLetterQueue`` → ``queue/$deadletterqueue`` (the entity part, lower-case)."""
    return split_uri(audience)[1]


def covers(audience: str, entity_path: str) -> bool:
    """Whether a token for ``audience`` grants access to ``entity_path`` (namespace tokens cover all)."""
    return scope_covers(audience_path(audience), entity_path)


def scope_covers(scope: str, entity_path: str) -> bool:
    """Whether an entity-path scope is ``entity_path`` or one of its prefixes, segment by segment."""
    path = entity_path.strip("/").lower()
    return scope == "" or path == scope or path.startswith(scope + "/")


def _seconds(value: object) -> float | None:
    """The put-token ``expiration``: seconds (int/float) or an AMQP timestamp (proton: milliseconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if type(value).__name__ == "timestamp":
        return float(value) / 1000.0
    return float(value)


class TokenAuthority:
    """Verifies put-token requests and remembers every presented token (thread-safe reads for tests)."""

    def __init__(self, key_name: str, key: str, *, accept_jwt: bool = False,
                 hosts: Iterable[str] = LOCAL_HOSTS) -> None:
        self.key_name = key_name
        self.key = key
        self.accept_jwt = accept_jwt
        self.hosts = frozenset(h.lower() for h in hosts)
        # Epoch seconds that tokens are judged by: a test moves it to make a token lapse at a chosen step.
        self.clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, str]] = {}
        self._seen: list[tuple[str, str]] = []

    def put_token(self, token_type: str, audience: str, token: str, expiration: object = None) -> TokenResult:
        with self._lock:
            self._last.pop(audience, None)
            self._last[audience] = (token_type, token)
            self._seen.append((token_type, audience))
        host, scope = split_uri(audience)
        if host is not None and host not in self.hosts:
            return TokenResult(False, 401, f"InvalidAudience: the audience {audience!r} is not this namespace "
                                           f"({', '.join(sorted(self.hosts))})")
        if token_type == SAS_TOKEN_TYPE or token.startswith(SAS_PREFIX):
            return self._check_sas(scope, token)  # SDK 7.15 labels SAS tokens "jwt": judge by content
        if token_type in JWT_TOKEN_TYPES:
            if not self.accept_jwt:
                return TokenResult(False, 401, JWT_REFUSED)
            if not token:
                return TokenResult(False, 401, "empty jwt token")
            expires_at = _seconds(expiration)
            if expires_at is not None and expires_at < self.clock():
                return TokenResult(False, 401, "the jwt token has expired")
            return TokenResult(True, 202, "Accepted", scope, expires_at)
        return TokenResult(False, 401, f"unsupported token type {token_type!r}")

    def _check_sas(self, scope: str, token: str) -> TokenResult:
        if not token.startswith(SAS_PREFIX):
            return TokenResult(False, 401, "malformed SAS token")
        raw = dict(part.split("=", 1) for part in token[len(SAS_PREFIX):].split("&") if "=" in part)
        try:
            sr, sig, se, skn = raw["sr"], unquote(raw["sig"]), int(raw["se"]), unquote(raw["skn"])
        except (KeyError, ValueError):
            return TokenResult(False, 401, "SAS token lacks sr, sig, se or skn")
        if skn != self.key_name:
            return TokenResult(False, 401, f"InvalidSignature: unknown shared access key name {skn!r}")
        if se < self.clock():
            return TokenResult(False, 401, "ExpiredToken: the SAS token has expired")
        digest = hmac.new(self.key.encode("utf-8"), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode("ascii"), sig):
            return TokenResult(False, 401, "InvalidSignature: the token has an invalid signature")
        resource = unquote_plus(sr)
        sr_host, sr_path = split_uri(resource if "://" in resource else "sb://" + resource)
        if sr_host not in self.hosts:
            return TokenResult(False, 401, f"InvalidAudience: the token's resource {resource!r} is not this "
                                           f"namespace ({', '.join(sorted(self.hosts))})")
        if not scope_covers(sr_path, scope):
            return TokenResult(False, 401, f"InvalidAudience: the token's resource {resource!r} does not cover "
                                           f"the audience '{scope}'")
        return TokenResult(True, 202, "Accepted", scope, float(se))

    def last_token(self, audience: str) -> tuple[str, str] | None:
        """Last (type, token) presented for an audience; also matches by entity path (``"my-queue"``)."""
        with self._lock:
            if audience in self._last:
                return self._last[audience]
            wanted = audience_path(audience)
            for aud in reversed(list(self._last)):
                if audience_path(aud) == wanted:
                    return self._last[aud]
        return None

    @property
    def tokens(self) -> list[tuple[str, str]]:
        """Every presented (token type, audience), oldest first."""
        with self._lock:
            return list(self._seen)
