"""Topics and subscriptions from the emulator's Config.json (``Namespaces[].Topics[].Subscriptions[].Rules[]``).

A topic only routes: a message sent to it is copied into every subscription that has a rule whose filter
matches. Each subscription is a queue of its own (``<topic>/Subscriptions/<name>``, with its own dead-letter
queue and settings). A subscription without rules gets Service Bus's ``$Default`` rule, which matches every
message. Rules with actions, and filters outside what :mod:`.sqlfilter` runs, are refused at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proton import Data

from . import codec
from .config import ConfigError, QueueSettings, queue_settings, read_document
from .sqlfilter import MATCH_ALL, Filter, FilterError, MessageView, compile_correlation, compile_sql

SUBSCRIPTIONS = "Subscriptions"
# Service Bus quotas: "Number of SQL filters per topic: 2,000", "Number of correlation filters per topic: 100,000".
MAX_SQL_FILTERS_PER_TOPIC = 2_000
MAX_CORRELATION_FILTERS_PER_TOPIC = 100_000


@dataclass(frozen=True)
class Rule:
    """A named filter; ``matches`` is compiled once."""

    name: str
    matches: Filter = field(compare=False)
    description: str = ""
    kind: str = "Sql"


@dataclass(frozen=True)
class SubscriptionSpec:
    settings: QueueSettings
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class TopicSpec:
    settings: QueueSettings
    subscriptions: dict[str, SubscriptionSpec]


def subscription_path(topic: str, subscription: str) -> str:
    return f"{topic}/{SUBSCRIPTIONS}/{subscription}"


def _rule(raw: Any, where: str, owner: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object")
    name = raw.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: Name must be a non-empty string")
    where = f"subscription {owner} ({where})"
    props = raw.get("Properties")
    if not isinstance(props, Mapping):
        raise ConfigError(f"{where}: Properties must be an object")
    action = props.get("Action")
    if action and (not isinstance(action, Mapping) or action.get("SqlExpression")):
        raise ConfigError(f"unsupported rule {name!r} in {where}: rule actions are not supported by localbus")
    kind = props.get("FilterType")
    try:
        if kind == "Correlation":
            spec = props.get("CorrelationFilter")
            return Rule(name, compile_correlation(spec if isinstance(spec, Mapping) else {}), f"correlation {spec}",
                        "Correlation")
        if kind == "Sql":
            sql = props.get("SqlFilter")
            expression = sql.get("SqlExpression") if isinstance(sql, Mapping) else None
            if not isinstance(expression, str):
                raise FilterError("SqlFilter.SqlExpression must be a string")
            return Rule(name, compile_sql(expression), expression)
    except FilterError as exc:
        raise ConfigError(f"unsupported rule {name!r} in {where}: {exc}") from None
    raise ConfigError(f"unsupported rule {name!r} in {where}: FilterType must be Correlation or Sql, got {kind!r}")


def _name(raw: Any, where: str, what: str) -> str:
    name = raw.get("Name") if isinstance(raw, Mapping) else None
    if not isinstance(name, str) or not name.strip() or "/" in name or "$" in name:
        raise ConfigError(f"{where}: Name must be a non-empty {what} name without '/' or '$'")
    return name


def parse_topic(name: str, raw: Mapping[str, Any], where: str = "topic") -> TopicSpec:
    """One topic in Config.json form: ``{"Properties": {...}, "Subscriptions": [{Name, Properties, Rules}]}``."""
    settings = queue_settings(raw.get("Properties"), where=f"topic {name!r}")
    subs_raw = raw.get(SUBSCRIPTIONS, [])
    if not isinstance(subs_raw, list):
        raise ConfigError(f"{where}: Subscriptions must be a list")
    subscriptions: dict[str, SubscriptionSpec] = {}
    for index, sub in enumerate(subs_raw):
        sub_where = f"{where}.Subscriptions[{index}]"
        sub_name = _name(sub, sub_where, "subscription")
        sub_settings = queue_settings(sub.get("Properties"), where=f"subscription {name}/{sub_name}")
        rules_raw = sub.get("Rules") or []
        if not isinstance(rules_raw, list):
            raise ConfigError(f"{sub_where}: Rules must be a list")
        rules = tuple(_rule(r, f"{sub_where}.Rules[{i}]", f"{name}/{sub_name}") for i, r in enumerate(rules_raw))
        if not rules:
            rules = (Rule("$Default", MATCH_ALL, "1=1"),)
        subscriptions[sub_name] = SubscriptionSpec(sub_settings, rules)
    for kind, limit in (("Sql", MAX_SQL_FILTERS_PER_TOPIC), ("Correlation", MAX_CORRELATION_FILTERS_PER_TOPIC)):
        count = sum(1 for sub in subscriptions.values() for rule in sub.rules if rule.kind == kind)
        if count > limit:
            prefix = "" if where == f"topic {name!r}" else f"{where}: "
            raise ConfigError(f"{prefix}topic {name!r} has {count:,} {'SQL' if kind == 'Sql' else 'correlation'} "
                              f"filters; Service Bus allows {limit:,} per topic")
    return TopicSpec(settings, subscriptions)


def parse_topics(document: Any, source: str = "config") -> dict[str, TopicSpec]:
    """Topics of every namespace of an emulator config document (already JSON-decoded and shape-checked)."""
    topics: dict[str, TopicSpec] = {}
    namespaces = document.get("UserConfig", {}).get("Namespaces", []) if isinstance(document, Mapping) else []
    for ns_index, namespace in enumerate(namespaces if isinstance(namespaces, list) else []):
        raw_topics = namespace.get("Topics", []) if isinstance(namespace, Mapping) else []
        if not isinstance(raw_topics, list):
            raise ConfigError(f"{source}: Namespaces[{ns_index}].Topics must be a list")
        for t_index, topic in enumerate(raw_topics):
            where = f"{source}: Namespaces[{ns_index}].Topics[{t_index}]"
            name = _name(topic, where, "topic")
            topics[name] = parse_topic(name, topic, where)
    return topics


def load_topics(path: str | Path) -> dict[str, TopicSpec]:
    """The topics of a Config.json file (its queues come from :func:`.config.load_config`)."""
    return parse_topics(read_document(path), source=str(path))


def _decode(raw: bytes) -> Any:
    data = Data()
    data.decode(raw)
    value = data.get_object()
    return bytes(value) if isinstance(value, memoryview) else value


_PROPERTY_FIELDS = ("message_id", None, "to", "subject", "reply_to", "correlation_id", "content_type", None, None,
                    None, "session_id", None, "reply_to_session_id")


def message_view(msg: codec.StoredMessage) -> MessageView:
    """The system and application properties of a stored message, decoded for filters."""
    view = MessageView()
    if msg.properties:
        count, pos, _ = codec.compound_items(msg.properties, codec.skip_value(msg.properties, 1))
        for index in range(min(count, len(_PROPERTY_FIELDS))):
            end = codec.skip_value(msg.properties, pos)
            key = _PROPERTY_FIELDS[index]
            if key is not None and msg.properties[pos] != 0x40:
                try:
                    value = _decode(msg.properties[pos:end])
                except Exception:  # an odd encoding: the property reads as absent
                    value = None
                if isinstance(value, bytes) and key in ("message_id", "correlation_id"):
                    value = value.hex()
                view.system[key] = None if value is None else (
                    value if isinstance(value, str | int | float) else str(value))
            pos = end
    if msg.application_properties:
        for key, _raw_key, raw_value in codec.map_entries(msg.application_properties):
            if isinstance(key, str):
                try:
                    view.user[key] = _decode(raw_value)
                except Exception:
                    continue
    return view
