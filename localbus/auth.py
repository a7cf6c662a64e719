"""Claims-based security: the ``$cbs`` put-token check and a log of presented tokens.

SAS tokens are verified exactly as Service Bus does (HMAC-SHA256 over ``<url-encoded uri>\\n<expiry>`` with the
configured key), so a wrong key fails the same way against localbus and the real service. They are recognised by
content, because SDK 7.15 sends them with token type ``jwt``. Real ``jwt`` tokens (Entra ID / managed identity)
cannot be verified locally; they are accepted and logged so tests can assert on what a credential produced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

SAS_TOKEN_TYPE = "servicebus.windows.net:sastoken"
JWT_TOKEN_TYPES = ("jwt", "servicebus.windows.net:jwt")
SAS_PREFIX = "SharedAccessSignature "


@dataclass(frozen=True)
class TokenResult:
    """Outcome of one put-token: ``ok`` plus an AMQP-style status code and description."""

    ok: bool
    status: int
    description: str


def audience_path(audience: str) -> str:
    """``sb://host:port/queue/$DeadLetterQueue`` → ``queue/$deadletterqueue`` (the entity part, lower-case)."""
    text = unquote_plus(audience.strip())
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    return text.strip("/").lower()


def covers(audience: str, entity_path: str) -> bool:
    """Whether a token for ``audience`` grants access to ``entity_path`` (namespace tokens cover all)."""
    scope = audience_path(audience)
    path = entity_path.strip("/").lower()
    return scope == "" or path == scope or path.startswith(scope + "/")


class TokenAuthority:
    """Verifies put-token requests and remembers every presented token (thread-safe reads for tests)."""

    def __init__(self, key_name: str, key: str) -> None:
        self.key_name = key_name
        self.key = key
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, str]] = {}
        self._seen: list[tuple[str, str]] = []

    def put_token(self, token_type: str, audience: str, token: str) -> TokenResult:
        with self._lock:
            self._last.pop(audience, None)
            self._last[audience] = (token_type, token)
            self._seen.append((token_type, audience))
        if token_type == SAS_TOKEN_TYPE or token.startswith(SAS_PREFIX):
            return self._check_sas(audience, token)  # SDK 7.15 labels SAS tokens "jwt": judge by content
        if token_type in JWT_TOKEN_TYPES:
            if not token:
                return TokenResult(False, 401, "empty jwt token")
            return TokenResult(True, 202, "Accepted")
        return TokenResult(False, 401, f"unsupported token type {token_type!r}")

    def _check_sas(self, audience: str, token: str) -> TokenResult:
        if not token.startswith(SAS_PREFIX):
            return TokenResult(False, 401, "malformed SAS token")
        raw = dict(part.split("=", 1) for part in token[len(SAS_PREFIX):].split("&") if "=" in part)
        try:
            sr, sig, se, skn = raw["sr"], unquote(raw["sig"]), int(raw["se"]), unquote(raw["skn"])
        except (KeyError, ValueError):
            return TokenResult(False, 401, "SAS token lacks sr, sig, se or skn")
        if skn != self.key_name:
            return TokenResult(False, 401, f"unknown shared access key name {skn!r}")
        if se < time.time():
            return TokenResult(False, 401, "SAS token has expired")
        digest = hmac.new(self.key.encode("utf-8"), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode("ascii"), sig):
            return TokenResult(False, 401, "InvalidSignature: the token has an invalid signature")
        if not covers(unquote_plus(sr), audience_path(audience)):
            return TokenResult(False, 401, "SAS token resource does not cover the audience")
        return TokenResult(True, 202, "Accepted")

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
