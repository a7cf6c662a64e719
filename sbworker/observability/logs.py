"""Logging for the whole process: our lines at the configured level, the SDKs' chatter only when it matters."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

from sbworker.core.text import clip
from sbworker.core.times import utc_from_timestamp

# These SDKs log every call at INFO (durabletask) or every link event (azure, proton); normal runs stay quiet.
NOISY_LOGGERS = ("durabletask", "azure", "proton", "grpc", "urllib3", "msal")

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


# Shapes of secrets that an SDK might put in a log line at DEBUG: SAS tokens, connection-string keys, bearer tokens.
_PATTERNS = (
    re.compile(r"(SharedAccessSignature\s+)[^\s'\",]+", re.IGNORECASE),
    re.compile(r"((?:SharedAccessKey|SharedAccessSignature|AccountKey)=)[^;'\"\s]+", re.IGNORECASE),
    re.compile(r"([?&]sig=)[^&'\"\s]+", re.IGNORECASE),
    re.compile(r"((?:Bearer|authorization['\"]?[:,]\s*['\"]?Bearer)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    re.compile(r"()eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # a JWT anywhere
)
REDACTED = "***"
# No log line (with its traceback) is longer than this: publishers choose subjects and ids, and a 200 KB subject
# must not become a 200 KB line in the operator's log store.
MAX_LINE_CHARS = 16_384


class RedactingFormatter(logging.Formatter):
    """Formats, then removes secrets: known values (the configured keys) and secret-shaped text."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The one time format (sbworker/core/times.py), not logging's local time with a comma."""
        return utc_from_timestamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return clip(redact(super().format(record), self._secrets), MAX_LINE_CHARS, count=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def configure(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Install one stderr handler on the root logger; SDK loggers at WARNING unless we run at DEBUG."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sbworker", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(_FORMAT, secrets))
    handler._sbworker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    sdk_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(sdk_level)
