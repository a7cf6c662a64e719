"""Queue settings, read from the official Service Bus emulator's ``Config.json``.

The same file is mounted into the official emulator by docker-compose, so localbus and the emulator agree on
entities. Only queue properties that change broker behaviour are interpreted; unknown keys are ignored with a
warning so a newer emulator file still loads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("localbus.config")

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "infra" / "servicebus-emulator" / "Config.json"

# Service Bus' "never expires" default TTL (TimeSpan.MaxValue) is far beyond anything a dev broker sees.
NEVER_SECONDS = 10_675_199 * 86_400.0

# Properties the emulator accepts but localbus does not act on: accepted silently.
_KNOWN_INERT = {"ForwardDeadLetteredMessagesTo", "ForwardTo", "MaxSizeInMegabytes",
                "EnableBatchedOperations", "EnablePartitioning", "Status", "AutoDeleteOnIdle"}


class ConfigError(ValueError):
    """The config file or a queue definition is malformed; the message is one human-readable line."""


_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: str | float | int) -> float:
    """ISO-8601 duration (``PT1M``, ``PT0.5S``, ``P14D``) or plain number of seconds → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().upper()
    match = _DURATION.match(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ConfigError(f"not an ISO-8601 duration: {value!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return (parts.get("days", 0.0) * 86400 + parts.get("hours", 0.0) * 3600
            + parts.get("minutes", 0.0) * 60 + parts.get("seconds", 0.0))


@dataclass(frozen=True)
class QueueSettings:
    """Behavioural settings of one queue, in seconds; names mirror the Config.json properties."""

    lock_duration: float = 60.0
    max_delivery_count: int = 10
    default_message_ttl: float = NEVER_SECONDS
    dead_lettering_on_message_expiration: bool = False
    requires_duplicate_detection: bool = False
    duplicate_detection_window: float = 600.0
    requires_session: bool = False


_PROPERTY_FIELDS = {
    "LockDuration": ("lock_duration", parse_duration),
    "MaxDeliveryCount": ("max_delivery_count", None),
    "DefaultMessageTimeToLive": ("default_message_ttl", parse_duration),
    "DeadLetteringOnMessageExpiration": ("dead_lettering_on_message_expiration", None),
    "RequiresDuplicateDetection": ("requires_duplicate_detection", None),
    "DuplicateDetectionHistoryTimeWindow": ("duplicate_detection_window", parse_duration),
    "RequiresSession": ("requires_session", None),
}


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def queue_settings(properties: Mapping[str, Any] | QueueSettings | None, where: str = "queue") -> QueueSettings:
    """Build settings from a ``Properties`` mapping (Config.json names), warning about unknown keys."""
    if isinstance(properties, QueueSettings):
        return properties
    if properties is None:
        return QueueSettings()
    if not isinstance(properties, Mapping):
        raise ConfigError(f"{where}: Properties must be an object, got {type(properties).__name__}")
    values: dict[str, Any] = {}
    for key, raw in properties.items():
        if key not in _PROPERTY_FIELDS:
            if key not in _KNOWN_INERT:
                log.warning("%s: ignoring unknown property %r", where, key)
            continue
        field, parser = _PROPERTY_FIELDS[key]
        try:
            if parser is not None:
                values[field] = parser(raw)
            elif field == "max_delivery_count":
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                    raise ConfigError(f"MaxDeliveryCount must be a positive integer, got {raw!r}")
                values[field] = raw
            else:
                values[field] = _bool(key, raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    settings = replace(QueueSettings(), **values)
    if settings.lock_duration <= 0:
        raise ConfigError(f"{where}: LockDuration must be positive")
    if settings.default_message_ttl <= 0:
        raise ConfigError(f"{where}: DefaultMessageTimeToLive must be positive")
    return settings


def parse_config(document: Any, source: str = "config") -> dict[str, QueueSettings]:
    """Queues of every namespace in an emulator config document (already JSON-decoded)."""
    if not isinstance(document, dict) or not isinstance(document.get("UserConfig"), dict):
        raise ConfigError(f"{source}: expected an object with a 'UserConfig' object")
    user = document["UserConfig"]
    for key in user:
        if key not in ("Namespaces", "Logging"):
            log.warning("%s: ignoring unknown key UserConfig.%s", source, key)
    namespaces = user.get("Namespaces", [])
    if not isinstance(namespaces, list):
        raise ConfigError(f"{source}: UserConfig.Namespaces must be a list")
    queues: dict[str, QueueSettings] = {}
    for ns_index, namespace in enumerate(namespaces):
        if not isinstance(namespace, dict):
            raise ConfigError(f"{source}: UserConfig.Namespaces[{ns_index}] must be an object")
        for key in namespace:
            if key not in ("Name", "Queues", "Topics"):
                log.warning("%s: ignoring unknown key Namespaces[%d].%s", source, ns_index, key)
        ns_queues = namespace.get("Queues", [])
        if not isinstance(ns_queues, list):
            raise ConfigError(f"{source}: Namespaces[{ns_index}].Queues must be a list")
        for q_index, queue in enumerate(ns_queues):
            where = f"{source}: Namespaces[{ns_index}].Queues[{q_index}]"
            if not isinstance(queue, dict):
                raise ConfigError(f"{where} must be an object")
            name = queue.get("Name")
            if not isinstance(name, str) or not name.strip() or "/" in name or "$" in name:
                raise ConfigError(f"{where}: Name must be a non-empty queue name without '/' or '$'")
            for key in queue:
                if key not in ("Name", "Properties"):
                    log.warning("%s: ignoring unknown key %r", where, key)
            queues[name] = queue_settings(queue.get("Properties"), where=f"queue {name!r}")
    return queues


def read_document(path: str | Path) -> Any:
    """Read and JSON-decode a Config.json file; any problem becomes a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def load_config(path: str | Path) -> dict[str, QueueSettings]:
    """Read and validate a Config.json file's queues; any problem becomes a one-line :class:`ConfigError`."""
    return parse_config(read_document(path), source=str(path))
